"""`runtime.cpu_kernels`: the stage runner pins the CPU kernels before torch loads, and every run's
lineage names the CPU and the kernels torch chose."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from videor4.core.params import ParamsError
from videor4.pipeline.runner import runtime_params

PROBE = """
import json, sys
from videor4.pipeline.runner import pin_cpu_kernels
pin_cpu_kernels(sys.argv[1])
from videor4.pipeline.lineage import cpu_tags
print(json.dumps(cpu_tags()))
"""


def _tags(level: str, **env: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, level],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_avx2_pins_atens_kernels_and_mkl_and_onednn_and_lineage_records_it():
    pinned = _tags("avx2")
    assert pinned["env.torch.cpu_capability"] == "AVX2"
    assert pinned["env.kernels.MKL_CBWR"] == "AVX2" and pinned["env.kernels.ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert pinned["env.cpu.model"] != "unknown" and pinned["env.torch.blas"]


def test_native_clears_a_pin_left_in_the_environment():
    native = _tags("native", ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2")
    assert native["env.kernels.ATEN_CPU_CAPABILITY"] == "unset" and native["env.kernels.MKL_CBWR"] == "unset"
    assert native["env.torch.cpu_capability"] == _tags("native")["env.torch.cpu_capability"]


def test_an_unknown_kernel_level_is_a_params_error():
    assert runtime_params({}).cpu_kernels == "avx2"  # as params.yaml
    with pytest.raises(ParamsError, match=r"runtime.cpu_kernels: 'avx9' is not one of avx2, native"):
        runtime_params({"runtime": {"cpu_kernels": "avx9"}})
    with pytest.raises(ParamsError, match=r"unknown params runtime: kernels"):
        runtime_params({"runtime": {"kernels": "avx2"}})


def test_after_torch_loaded_only_the_kernels_in_force_may_be_asked_for():
    import os

    import torch  # noqa: F401  (loaded, as in a test process that trained before)

    from videor4.pipeline.runner import pin_cpu_kernels

    in_force = "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "native"
    pin_cpu_kernels(in_force)
    with pytest.raises(RuntimeError, match="before torch is imported"):
        pin_cpu_kernels("native" if in_force == "avx2" else "avx2")
