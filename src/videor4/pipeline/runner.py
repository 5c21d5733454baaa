"""The stage runner: what every pipeline stage shares around the library call — its
MLflow run (a child of the pipeline run, with declared params and lineage tags), its
metrics file, one-line failures, progress bars and the multi-process relaunch.

Stages run from the repository root (`dvc repro` runs `python stages/<name>.py`), so
relative paths here are relative to it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from videor4.core.io import is_number, os_error_in, write_json
from videor4.core.launch import is_main_process, world_size
from videor4.core.params import ParamsError, fill
from videor4.pipeline.lineage import (
    LOCK_FILE,
    declared_params,
    dep_md5,
    entry_path,
    environment_tags,
    git_output,
    lineage_tags,
    load_params,
    stage_definition,
)
from videor4.pipeline.tracking import (
    DatasetRecord,
    Run,
    TrackingConfig,
    TrackingError,
    flatten,
    start_child_run,
)

DATASET_ROOT = "data"  # a stage's deps and outs under data/ are its datasets in MLflow
WORK_ROOT = Path(".cache")  # resumable training state, <root>/<stage>; not a DVC out
# the command line of every training stage (sft.py, rl.py)
TRAINING_PATHS = ("init", "data", "held-out", "out", "metrics", "curve")


# What a run took and where its checkpoint lies, not what it achieved: logged to MLflow (metrics and
# `checkpoint.*` tags; dvc.lock holds the md5s) and kept out of the metrics files, so `dvc exp show`
# and `dvc metrics diff` compare results and not wall-clock noise.
RUN_RECORD_KEYS = frozenset(
    {
        "seconds",
        "train_seconds",
        "checkpoint",
        "processes",
        "bf16",
        "resumed_from_step",
        "videos_per_second",
        "train_tokens_per_second",
    }
)


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any], run: Run | None = None) -> Path:
    """Write the stage's metrics file (nested as given, without `RUN_RECORD_KEYS`) and log every
    number, the run record's included, to the run (dotted keys)."""
    path = Path(path)
    write_json(path, {key: value for key, value in metrics.items() if key not in RUN_RECORD_KEYS})
    if run is not None:
        numbers = {key: value for key, value in flatten(metrics).items() if is_number(value)}
        run.log_metrics(numbers)
    return path


@dataclass
class TrackingParams:
    """`tracking:` in params.yaml ($MLFLOW_TRACKING_URI beats `uri`)."""

    uri: str | None = None
    experiment: str | None = None
    strict: bool = False  # true: a stage fails when MLflow cannot be reached
    artifact_location: str | None = None


def tracking_config(params: Mapping[str, Any]) -> TrackingConfig:
    """TrackingConfig from the `tracking:` section (uri, experiment, strict, artifact_location).

    With a local store (sqlite) and an S3 bucket in `storage:`, new experiments keep their
    artifacts in s3://<bucket>/<prefix>/mlflow; MLflow's S3 client is pointed at the
    storage endpoint.  A tracking server keeps its own `--artifacts-destination`.
    """
    from videor4.pipeline.storage import mlflow_environment, s3_settings

    section = fill(TrackingParams, params.get("tracking"), "tracking")
    config = TrackingConfig(
        tracking_uri=section.uri,
        artifact_location=section.artifact_location,
        experiment=section.experiment or TrackingConfig.experiment,
        strict=section.strict,
    )
    storage = s3_settings(params)
    if storage.configured:
        for key, value in mlflow_environment(storage).items():
            os.environ.setdefault(key, value)
        if not config.artifact_location and config.local_store:
            config.artifact_location = storage.mlflow_url
    return config


def dvc_invocation() -> tuple[str, str] | None:
    """(key, command line) of the `dvc repro` / `dvc exp run` process this stage runs under.

    DVC starts each stage as a child process; every stage of one invocation shares that
    ancestor, so (host, pid, start time) identifies the pipeline run.  None outside DVC.
    """
    import socket

    import psutil

    try:
        for proc in psutil.Process().parents():
            cmd = proc.cmdline()
            if any(Path(arg).name == "dvc" for arg in cmd[:2]) and {"repro", "exp"} & set(cmd):
                start = cmd.index(next(a for a in cmd[:2] if Path(a).name == "dvc"))
                return f"{socket.gethostname()}:{process_start_stamp(proc)}", " ".join(
                    ["dvc", *cmd[start + 1 :]]
                )
    except psutil.Error:
        return None
    return None


def process_start_stamp(proc: Any) -> str:
    """A process's identity that stays the same for its whole life: pid and start time.

    On Linux the start time is read in clock ticks since boot (with the boot id), not psutil's
    wall-clock create_time: that one is boot time + ticks, and boot time moves when the clock
    is stepped (a VM resumed from a snapshot, NTP), so two stages of one `dvc exp run` could see
    different keys and split the pipeline run in two.
    """
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after "pid (comm)"
        return f"{boot_id}:{proc.pid}:{ticks}"
    except (OSError, IndexError):
        return f"{proc.pid}:{proc.create_time():.2f}"


def pipeline_identity() -> tuple[str | None, str, dict[str, str]]:
    """(key, readable name, tags) of the pipeline run grouping this invocation's stages."""
    invocation = dvc_invocation()
    if invocation is None:
        return None, "", {}
    key, command = invocation
    exp = os.environ.get("DVC_EXP_NAME")
    name = f"pipeline {exp or 'workspace'} {time.strftime('%Y-%m-%d %H:%M')}"
    tags = {
        "dvc.command": command,
        "videor4.role": "pipeline",
        "git.commit": git_output("rev-parse", "HEAD") or "unknown",
    }
    if exp:
        tags["dvc.exp_name"] = exp
    return key, name, tags


@contextlib.contextmanager
def stage_run(
    stage: str, params: Mapping[str, Any], dvc_yaml: str | os.PathLike = "dvc.yaml"
) -> Iterator[Run]:
    """The stage's MLflow run: named after the stage, with its declared params and lineage tags,
    a child of the pipeline run of the `dvc repro` / `dvc exp run` it belongs to (which logs every param).

    Under a multi-process launch only the main process tracks; the others get an inactive run.
    """
    if not is_main_process():
        with _os_errors_in_one_line(stage):
            yield Run(stage, tracking_config(params))
        return
    key, name, tags = pipeline_identity()
    root = Path(dvc_yaml).parent
    environment = environment_tags(root)
    lineage = lineage_tags(stage, dvc_yaml)
    try:
        with (
            start_child_run(
                stage,
                tracking_config(params),
                key,
                name,
                pipeline_params=params,
                pipeline_tags={**tags, **environment} if key else tags,
                params=declared_params(stage, params, dvc_yaml),
                tags={**lineage, **environment, "launch.world_size": str(world_size())},
            ) as run,
            _os_errors_in_one_line(stage),
        ):
            run.lineage = lineage
            lock = root / LOCK_FILE
            if lock.is_file():
                run.log_artifact(lock, "environment")
            inputs, outputs = stage_datasets(stage, dvc_yaml)
            run.log_datasets([dataset_record(p, root, lineage.get(f"dep.{p}.md5")) for p in inputs], "input")
            yield run
            run.log_datasets([dataset_record(p, root) for p in outputs if (root / p).exists()], "output")
    except TrackingError as exc:  # tracking.strict and MLflow failed
        fail(stage, exc)


def stage_datasets(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> tuple[list[str], list[str]]:
    """The stage's declared deps and outs that are datasets (under data/), as declared."""
    definition = stage_definition(stage, dvc_yaml)

    def datasets(entries: list[Any]) -> list[str]:
        return [p for p in map(entry_path, entries) if Path(p).parts[:1] == (DATASET_ROOT,)]

    return datasets(definition["deps"]), datasets(definition["outs"])


def dataset_record(path: str, root: str | os.PathLike = ".", md5: str | None = None) -> DatasetRecord:
    """A dataset path as MLflow shows it: its DVC md5 (hashed unless given) and rows (a .jsonl) or files (a
    folder)."""
    full = Path(root) / path
    if full.is_dir():
        profile = {"files": sum(1 for p in full.rglob("*") if p.is_file())}
    elif full.suffix == ".jsonl":
        with open(full, "rb") as fh:
            profile = {"rows": sum(1 for line in fh if line.strip())}
    else:
        profile = {"bytes": full.stat().st_size}
    digest = md5 if md5 not in (None, "missing") else dep_md5(full, root)
    return DatasetRecord(name=path, digest=digest, source=str(full), profile=profile)


@contextlib.contextmanager
def _os_errors_in_one_line(stage: str) -> Iterator[None]:
    """A full disk, a read-only or forbidden folder: one `error:` line (the run is marked FAILED)."""
    try:
        yield
    except Exception as exc:
        cause = None if isinstance(exc, TrackingError) else os_error_in(exc)
        if cause is None:
            raise
        fail(stage, cause)


def stage_args(
    doc: str, *paths: str, stages: Mapping[str, Any] | Sequence[str] | None = None
) -> argparse.Namespace:
    """The stage's command line as dvc.yaml writes it: `[<stage>] --<name> PATH ...`.

    Every input and output path is an option given in the stage's `cmd`, so dvc.yaml is the
    one place that names them (beside its deps and outs).  `stages` lists the stage names a
    script serves when it serves several (sft.py: drp_sft and crp_sft).
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if stages is not None:
        parser.add_argument("stage", choices=sorted(stages))
    for name in paths:  # "name+" takes one or more paths
        many = name.endswith("+")
        parser.add_argument(
            f"--{name.rstrip('+')}", required=True, type=Path, metavar="PATH", nargs="+" if many else None
        )
    return parser.parse_args()


def stage_inputs(
    doc: str, *paths: str, stages: Mapping[str, Any] | Sequence[str] | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The stage's command line (`stage_args`) and params.yaml, with the CPU kernels pinned as
    `runtime.cpu_kernels` says (before anything imports torch)."""
    quiet_upstream_warnings()
    args, params = stage_args(doc, *paths, stages=stages), load_params()
    with one_line_errors(getattr(args, "stage", None) or Path(sys.argv[0]).stem):
        pin_cpu_kernels(runtime_params(params).cpu_kernels)
    return args, params


# The variables that choose CPU code paths, read once when torch, MKL and oneDNN load.  The same
# computation on another CPU takes other paths (AVX-512 vs AVX2 kernels, MKL's dispatch), and the
# float results, hence the checkpoints' bytes, differ; pinned to AVX2 they agree across x86 CPUs
# that have it.
CPU_KERNEL_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "native": {},
}


@dataclass
class RuntimeParams:
    """`runtime:` in params.yaml: how the stages use this machine."""

    # avx2: pinned, the same bytes on any x86 CPU with AVX2 | native: what torch picks for this CPU
    # (faster by ~8 % here; the only choice off x86)
    cpu_kernels: str = "avx2"

    def __post_init__(self) -> None:
        if self.cpu_kernels not in CPU_KERNEL_ENV:
            raise ParamsError(
                f"params runtime.cpu_kernels: {self.cpu_kernels!r} is not one of {', '.join(CPU_KERNEL_ENV)}"
            )


def runtime_params(params: Mapping[str, Any]) -> RuntimeParams:
    return fill(RuntimeParams, params.get("runtime"), "runtime")


def pin_cpu_kernels(level: str) -> None:
    """Set (avx2) or clear (native) the kernel-choosing variables; they act only before torch loads,
    so a process that already imported torch may only ask for the kernels it has."""
    names = sorted({key for env in CPU_KERNEL_ENV.values() for key in env})
    wanted = {name: CPU_KERNEL_ENV[level].get(name) for name in names}
    if "torch" in sys.modules:
        if wanted != {name: os.environ.get(name) for name in names}:
            raise RuntimeError(f"runtime.cpu_kernels={level} must be applied before torch is imported")
        return
    for name, value in wanted.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_upstream_warnings() -> None:
    """Silence the warnings a stage prints that only upstream code can fix; each names its cause.
    Our own code raises none (tests/test_ops.py runs a stage and counts them)."""
    # TRL 1.16's unwrap_model_for_generation reads transformers' deprecated alias
    # `is_gradient_checkpointing` (FutureWarning since transformers 5.x) on every generation.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    # DeepSpeed (imported by accelerate/transformers when installed) warns on every import that it
    # found no GPU and uses the CPU; that is this machine's normal case, not a problem.
    logging.getLogger("DeepSpeed").addFilter(_DropMessages("Setting accelerator to CPU"))
    # MLflow 3.17 warns when a logged model has a signature but no input example; given one, Model.log
    # loads the model and predicts on it (a rumination over the example's video, which does not ship
    # with the model), and pyfunc's save_model refuses the switch that skips that check.
    warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)


@contextlib.contextmanager
def one_line_errors(stage: str, *errors: type[BaseException]) -> Iterator[None]:
    """Errors of these types (a bad params section by default) end the stage in one `error:` line."""
    try:
        yield
    except errors or (ValueError,) as exc:
        fail(stage, exc)


def training_stage(
    doc: str, script: str, *paths: str, stages: Mapping[str, Any] | Sequence[str]
) -> tuple[argparse.Namespace, dict[str, Any], float]:
    """A training stage's start: its command line and params, the multi-process relaunch when
    configured, the resumable work dir (`args.work`) and the start time."""
    args, params = stage_inputs(doc, *paths, stages=stages)
    relaunch_distributed(params, script, sys.argv[1:])
    args.work = WORK_ROOT / args.stage
    return args, params, time.time()


@contextlib.contextmanager
def training_run(
    args: argparse.Namespace, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Iterator[Run]:
    """The training stage's run, tagged with the checkpoint it starts from and its data."""
    with stage_run(args.stage, params) as run:
        run.set_tags({"init": str(args.init), **tags})
        yield run


def relaunch_distributed(params: Mapping[str, Any], script: str, args: list[str]) -> None:
    """With more than one process (params `launch:` or $VIDEOR4_NUM_PROCESSES ...), re-run this
    stage under `accelerate launch` and exit with its status.

    `dvc repro` then drives a multi-GPU node unchanged, and on a cluster each node runs its
    share of the same command (see README, "Scale-out").  A process already started by a
    launcher (RANK set) or a single-process setting returns at once.
    """
    from videor4.core.launch import launch_settings

    if "RANK" in os.environ:
        return
    try:
        settings = launch_settings(params)
    except ValueError as exc:
        fail("launch", exc)
    if not settings.distributed:
        return
    cmd = settings.command(script, args)
    print("launching:", " ".join(cmd), file=sys.stderr)
    raise SystemExit(subprocess.call(cmd))


def declared_dep_md5(run: Run, path: str | os.PathLike, dvc_yaml: str | os.PathLike = "dvc.yaml") -> str:
    """The md5 of one of the stage's deps as its lineage tags recorded it when the run started,
    so a multi-GB checkpoint is read once per stage; hashed here only for a path the stage does
    not declare (or a run without lineage: a non-main process)."""
    root = Path(dvc_yaml).parent
    declared = Path(os.path.relpath(path, root)).as_posix()
    md5 = run.lineage.get(f"dep.{declared}.md5")
    return md5 if md5 not in (None, "missing") else dep_md5(path, root)


def progress_bar(label: str, total: int) -> Callable[[int], None]:
    """A tqdm bar on stderr; returns its `update` (the library's progress callback)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False)
    return bar.update


def describe_failure(exc: BaseException | str) -> str:
    """One line for the error.  A file-system error names the file and says what survived:
    every output is written to a temporary sibling and swapped in only when complete."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}; the previous outputs are unchanged"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def fail(stage: str, exc: BaseException | str) -> NoReturn:
    """End the stage with a one-line error and exit status 1 (its run is marked FAILED)."""
    print(f"error: {stage}: {describe_failure(exc)}", file=sys.stderr)
    raise SystemExit(1)
