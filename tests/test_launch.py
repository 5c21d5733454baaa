"""The launch path: params and environment choose one process, one node or several nodes;
the accelerate command line each node runs; the repo's accelerate and DeepSpeed configs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from videor4.core.launch import LaunchSettings, launch_settings

ROOT = Path(__file__).resolve().parent.parent


def test_default_is_one_process() -> None:
    settings = launch_settings({}, environ={})
    assert settings == LaunchSettings() and not settings.distributed


def test_one_node_of_eight_gpus_from_params() -> None:
    params = {"launch": {"num_processes": 8, "accelerate_config": "configs/accelerate/one_node_8gpu.yaml"}}
    settings = launch_settings(params, environ={})
    assert settings.distributed
    cmd = settings.command("stages/sft.py", ["drp_sft", "--init", "models/base"], python="python")
    assert cmd == [
        "python",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "8",
        "--config_file",
        "configs/accelerate/one_node_8gpu.yaml",
        "stages/sft.py",
        "drp_sft",
        "--init",
        "models/base",
    ]


def test_each_node_of_a_cluster_from_the_environment() -> None:
    """Shared params, per-node environment (e.g. from SLURM): node 1 of 2 nodes of 8 GPUs."""
    params = {"launch": {"num_processes": 16, "accelerate_config": "configs/accelerate/multi_node_8gpu.yaml"}}
    env = {
        "VIDEOR4_NUM_MACHINES": "2",
        "VIDEOR4_MACHINE_RANK": "1",
        "VIDEOR4_MAIN_PROCESS_IP": "10.0.0.1",
        "VIDEOR4_MAIN_PROCESS_PORT": "29555",
    }
    settings = launch_settings(params, environ=env)
    cmd = settings.command("stages/rl.py", ["rl_d", "--init", "models/drp_sft"], python="python")
    flags = dict(zip(cmd[3:-3:2], cmd[4:-3:2]))
    assert flags == {
        "--num_processes": "16",
        "--config_file": "configs/accelerate/multi_node_8gpu.yaml",
        "--num_machines": "2",
        "--machine_rank": "1",
        "--main_process_ip": "10.0.0.1",
        "--main_process_port": "29555",
    }
    assert (
        launch_settings(params, environ={"VIDEOR4_NUM_PROCESSES": "4"}).num_processes == 4
    )  # env beats params


@pytest.mark.parametrize(
    "section, env, message",
    [
        (
            {"num_processes": 12, "num_machines": 8},
            {"VIDEOR4_MAIN_PROCESS_IP": "h"},
            "must be a multiple of launch.num_machines",
        ),
        (
            {"num_processes": 16, "num_machines": 2},
            {},
            r"needs the head node's address: set \$VIDEOR4_MAIN_PROCESS_IP",
        ),
        (
            {"num_processes": 16, "num_machines": 2},
            {"VIDEOR4_MACHINE_RANK": "2", "VIDEOR4_MAIN_PROCESS_IP": "h"},
            r"machine_rank \(2\) must be in 0\.\.1",
        ),
        ({"num_processes": "eight"}, {}, "launch.num_processes must be an integer, not 'eight'"),
        ({"num_procs": 8}, {}, "unknown params launch: num_procs"),
    ],
)
def test_bad_launch_settings_say_what_is_wrong(section, env, message) -> None:
    with pytest.raises(ValueError, match=message):
        launch_settings({"launch": section}, environ=env)


def test_repo_configs_are_consistent() -> None:
    """The accelerate files launch what they say, and every DeepSpeed file is a ZeRO stage
    whose batch sizes the HF trainer fills in ("auto")."""
    one = yaml.safe_load((ROOT / "configs/accelerate/one_node_8gpu.yaml").read_text())
    multi = yaml.safe_load((ROOT / "configs/accelerate/multi_node_8gpu.yaml").read_text())
    assert (one["num_machines"], one["num_processes"]) == (1, 8)
    assert multi["num_machines"] >= 2 and multi["num_processes"] == 8 * multi["num_machines"]
    expected = {
        "zero2": (2, False, False),
        "zero2_offload": (2, True, False),
        "zero3": (3, False, False),
        "zero3_offload": (3, True, True),
    }
    for name, (stage, optimizer_offload, param_offload) in expected.items():
        cfg = json.loads((ROOT / f"configs/deepspeed/{name}.json").read_text())
        zero = cfg["zero_optimization"]
        assert zero["stage"] == stage, name
        assert ("offload_optimizer" in zero) == optimizer_offload and (
            "offload_param" in zero
        ) == param_offload, name
        for key in (
            "train_batch_size",
            "train_micro_batch_size_per_gpu",
            "gradient_accumulation_steps",
            "gradient_clipping",
        ):
            assert cfg[key] == "auto", (name, key)


def test_stage_reports_bad_launch_settings_in_one_line(tmp_path) -> None:
    import subprocess

    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"launch": {"num_processes": 16, "num_machines": 2}})
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages/sft.py"),
            "drp_sft",
            "--init",
            "models/base",
            "--data",
            "d.jsonl",
            "--held-out",
            "t.jsonl",
            "--out",
            "models/drp_sft",
            "--metrics",
            "m.json",
            "--curve",
            "c.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "error: launch: a 2-machine launch needs the head node's address: set $VIDEOR4_MAIN_PROCESS_IP"
    )


_DEEPSPEED_INIT = """
import os, sys
from videor4.core.launch import rendezvous_for_one_process
if sys.argv[1] == "rendezvous":
    rendezvous_for_one_process()
import deepspeed
deepspeed.init_distributed(dist_backend="gloo")
import torch.distributed as dist
print("world", dist.get_world_size(), "rank", dist.get_rank())
dist.destroy_process_group()
"""


@pytest.mark.parametrize("how", ["bare", "rendezvous"])
def test_one_process_deepspeed_needs_no_mpi(how) -> None:
    """A stage with a DeepSpeed config and no launcher (`dvc repro`, a DVC queue worker): without the
    rendezvous variables DeepSpeed goes looking for MPI, which is not installed; with them it forms a
    group of one."""
    import subprocess

    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    done = subprocess.run(
        [sys.executable, "-c", _DEEPSPEED_INIT, how], env=env, capture_output=True, text=True, timeout=120
    )
    if how == "bare":
        assert done.returncode != 0 and "mpi4py" in done.stderr, done.stderr[-2000:]
    else:
        assert done.returncode == 0 and "world 1 rank 0" in done.stdout, done.stderr[-2000:]


def test_a_launchers_rendezvous_is_left_alone(monkeypatch) -> None:
    from videor4.core import launch

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    launch.rendezvous_for_one_process()
    assert os.environ["RANK"] == "3" and os.environ["WORLD_SIZE"] == "4"
