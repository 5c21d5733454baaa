"""The video-r4 command line, run as a user would (subprocess)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_build import PARAMS  # noqa: F401  (reuses the tiny build)

BIN = Path(sys.executable).parent / "video-r4"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    result = cli("--help")
    assert result.returncode == 0 and "data" in result.stdout
    assert time.perf_counter() - t0 < 3  # heavy libraries are imported lazily
    assert "build" in cli("data", "--help").stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    import yaml

    work = tmp_path_factory.mktemp("cli")
    params = {**PARAMS, "data": {"ocr": {"max_videos": 0}, "sizes": {"drp": 4, "crp": 4, "rl_d": 2, "rl_c": 2}}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / "expectations").symlink_to(Path(__file__).resolve().parent.parent / "expectations")
    result = cli("data", "build", cwd=work)
    assert result.returncode == 0, result.stderr
    assert '"n_drp": 4' in result.stdout
    return work


def test_show_renders_a_png(workdir):
    result = cli("data", "show", "crp-000000", cwd=workdir)
    if result.returncode != 0:  # the first CRP candidate may have been dropped by QC
        import json

        first = json.loads((workdir / "data/built/sft_crp.jsonl").read_text().splitlines()[0])["traj_id"]
        result = cli("data", "show", first, cwd=workdir)
    assert result.returncode == 0, result.stderr
    png = Path(workdir / result.stdout.strip().removeprefix("wrote "))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_and_validate(workdir):
    import json

    first = json.loads((workdir / "data/built/sft_drp.jsonl").read_text().splitlines()[0])["traj_id"]
    result = cli("data", "replay", first, cwd=workdir)
    assert result.returncode == 0 and "replay ok" in result.stdout
    result = cli("data", "validate", "data/built/sft_drp.jsonl", "--dataset", "sft_drp", cwd=workdir)
    assert result.returncode == 0, result.stdout


def test_clear_errors(workdir, tmp_path):
    result = cli("data", "show", "nope-1", cwd=workdir)
    assert result.returncode == 1 and "no trajectory 'nope-1'" in result.stderr
    result = cli("data", "build", "--params", str(tmp_path / "missing.yaml"), cwd=workdir)
    assert result.returncode == 1 and "params file not found" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"traj_id": "x"}\n')
    result = cli("data", "validate", str(bad), "--dataset", "sft_drp", cwd=workdir)
    assert result.returncode == 1 and "FAILED" in result.stdout
