"""How a training stage is launched: one process, one node of N GPUs, or several nodes.

The topology comes from params.yaml's `launch:` section, each key overridden by an
environment variable, because on a cluster the machine rank and the head node's address
differ per node and are known only to the scheduler:

    VIDEOR4_NUM_PROCESSES  VIDEOR4_NUM_MACHINES  VIDEOR4_MACHINE_RANK
    VIDEOR4_MAIN_PROCESS_IP  VIDEOR4_MAIN_PROCESS_PORT  VIDEOR4_ACCELERATE_CONFIG

`num_processes` counts processes on all machines together (accelerate's meaning): two
nodes of 8 GPUs are num_processes 16, num_machines 2.  The processes themselves learn
their rank and the world size from the launcher (RANK, LOCAL_RANK, WORLD_SIZE).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "VIDEOR4_"


@dataclass
class LaunchSettings:
    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    accelerate_config: str | None = None

    def validate(self) -> None:
        if self.num_processes < 1 or self.num_machines < 1:
            raise ValueError(
                f"launch.num_processes ({self.num_processes}) and launch.num_machines ({self.num_machines}) "
                "must be >= 1"
            )
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"launch.num_processes ({self.num_processes}) counts processes on all machines; "
                f"it must be a multiple of launch.num_machines ({self.num_machines})"
            )
        if not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(
                f"launch.machine_rank ({self.machine_rank}) must be in 0..{self.num_machines - 1}"
            )
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError(
                f"a {self.num_machines}-machine launch needs the head node's address: set "
                f"${ENV_PREFIX}MAIN_PROCESS_IP"
            )

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1 or self.num_machines > 1

    def command(self, script: str, args: list[str], python: str = sys.executable) -> list[str]:
        """The `accelerate launch` command line that starts this machine's share of the processes."""
        cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_processes)]
        if self.accelerate_config:
            cmd += ["--config_file", self.accelerate_config]
        else:
            cmd += ["--multi_gpu"]  # torchrun-style workers; on a CPU-only machine they use gloo
        if self.num_machines > 1:
            cmd += ["--num_machines", str(self.num_machines), "--machine_rank", str(self.machine_rank)]
            cmd += ["--main_process_ip", str(self.main_process_ip)]
        if self.main_process_port:
            cmd += ["--main_process_port", str(self.main_process_port)]
        return [*cmd, script, *args]


def launch_settings(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> LaunchSettings:
    """LaunchSettings from `launch:` in params, each key overridden by $VIDEOR4_<KEY>."""
    environ = os.environ if environ is None else environ
    section = dict(params.get("launch") or {})
    known = fields(LaunchSettings)
    unknown = sorted(set(section) - {f.name for f in known})
    if unknown:
        raise ValueError(
            f"unknown params launch: {', '.join(unknown)} (known: {', '.join(sorted(f.name for f in known))})"
        )
    values: dict[str, Any] = {}
    for field in known:
        raw = environ.get(ENV_PREFIX + field.name.upper()) or section.get(field.name)
        if raw in (None, ""):
            continue
        if not field.type.startswith("int"):  # the annotations are strings ("int", "str | None", ...)
            values[field.name] = str(raw)
            continue
        try:
            values[field.name] = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"launch.{field.name} must be an integer, not {raw!r}") from None
    settings = LaunchSettings(**values)
    settings.validate()
    return settings


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rendezvous_for_one_process() -> None:
    """Without a launcher (plain `python stages/...` under `dvc repro` or a DVC queue worker) DeepSpeed
    finds no RANK/MASTER_ADDR and goes looking for MPI; a world of one says so explicitly instead."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return  # a launcher set them
    port = free_loopback_port()  # for the one-process process group
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ[name] = value
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))


def world_size() -> int:
    """How many processes train together, as the launcher says (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate / deepspeed launch, or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def local_device() -> str:
    """This process's device: the GPU the launcher gave it (LOCAL_RANK), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return f"cuda:{index}"
