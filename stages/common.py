"""What every stage shares: params, the stage's declaration in dvc.yaml, lineage,
metrics and the MLflow run.

This is the DVC-aware side; the `videor4` library itself knows nothing of DVC.
Stages run from the repository root (`dvc repro` runs `python stages/<name>.py`),
so relative paths here are relative to it.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from videor4.io import os_error_in, write_json
from videor4.launch import is_main_process, world_size
from videor4.tracking import Run, TrackingConfig, TrackingError, flatten, start_child_run

METRICS_DIR = Path("metrics")
HELD_OUT = Path("data/built/samples_test.jsonl")  # the test split's prompts, for held-out checks
MAX_ARTIFACT_MB = 200  # larger checkpoints are referenced by path and md5 only
DEFAULT_PARAMS = "params.yaml"
STAGE_FIELDS = ("cmd", "deps", "params", "outs", "metrics", "plots")


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def stage_definition(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> dict[str, Any]:
    """The stage's cmd, deps, params, outs, metrics and plots as declared (absent ones empty)."""
    with open(dvc_yaml, encoding="utf-8") as fh:
        stages = (yaml.safe_load(fh) or {}).get("stages") or {}
    if stage not in stages:
        raise KeyError(f"stage {stage!r} is not in {dvc_yaml} (stages: {', '.join(stages) or 'none'})")
    declared = stages[stage] or {}
    definition = {field: declared.get(field) or [] for field in STAGE_FIELDS}
    definition["cmd"] = declared.get("cmd") or ""
    return definition


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _load_params_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".toml":
        import tomllib

        with open(path, "rb") as fh:
            return tomllib.load(fh)
    return load_params(path)  # YAML, and JSON (a subset of YAML)


def declared_params(stage: str, params: Mapping[str, Any], dvc_yaml: str | os.PathLike = "dvc.yaml") -> dict[str, Any]:
    """The params the stage declares, as one flat dotted dict.

    A declared section ("reward") is expanded into its leaves ("reward.format", ...).
    Keys from a params file other than params.yaml are prefixed "<file>:".  A declared
    key missing from the file is left out (DVC itself reports it).
    """
    root = Path(dvc_yaml).parent
    flat: dict[str, Any] = {}

    def add(tree: Mapping[str, Any], keys: list[str] | None, prefix: str) -> None:
        if not keys:  # `- other.yaml:` with no keys tracks the whole file
            keys = list(tree)
        for key in keys:
            found, value = _lookup(tree, key)
            if not found:
                continue
            if isinstance(value, Mapping) and value:
                flat.update({prefix + k: v for k, v in flatten(value, key).items()})
            else:
                flat[prefix + key] = value

    for entry in stage_definition(stage, dvc_yaml)["params"]:
        if isinstance(entry, str):
            add(params, [entry], "")
            continue
        for file, keys in entry.items():
            if file == DEFAULT_PARAMS:
                add(params, list(keys or []), "")
            else:
                add(_load_params_file(root / file), list(keys or []), f"{file}:")
    return flat


def _dep_path(dep: Any) -> str:
    # a dep is a path, or (rarely) a one-key mapping {path: {options}}
    return dep if isinstance(dep, str) else next(iter(dep))


def _md5_builder(root: str | os.PathLike) -> Callable[[str], str]:
    """A function hashing paths as DVC 3 does, honouring .dvcignore under `root`."""
    from dvc.ignore import DvcIgnoreFilter
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    fs = LocalFileSystem()
    ignore = DvcIgnoreFilter(fs, os.path.abspath(root))
    # dry_run: hash only; directory listings are staged in an in-memory object store
    odb = HashFileDB(MemoryFileSystem(), "/videor4-dep-md5")

    def md5(path: str) -> str:
        full = os.path.abspath(path)
        if not os.path.exists(full):
            raise FileNotFoundError(f"dependency not found: {path}")
        _, _, obj = build(odb, full, fs, "md5", dry_run=True, ignore=ignore)
        return str(obj.hash_info.value)

    return md5


def dep_md5(path: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """The md5 of a dependency exactly as DVC 3 records it in dvc.lock.

    A file: the md5 of its bytes.  A directory: the "<md5>.dir" hash of its listing,
    honouring .dvcignore under `root` (the repository root) as DVC does.  Computed
    with DVC's own hashing (dvc_data) so it cannot drift from what DVC writes.
    """
    return _md5_builder(root)(os.fspath(path))


def _git(*args: str, cwd: str | os.PathLike = ".") -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lineage_tags(stage: str, dvc_yaml: str | os.PathLike = "dvc.yaml") -> dict[str, str]:
    """Tags that tie a run to the code and data it ran on.

    git.dirty counts modified tracked files only: untracked files (metrics written by
    earlier stages, mlflow.db) would otherwise mark every pipeline run dirty.
    """
    from videor4 import __version__

    root = Path(dvc_yaml).parent
    commit = _git("rev-parse", "HEAD", cwd=root) or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    tags = {
        "git.commit": commit,
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc.stage": stage,
        "videor4.version": __version__,
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown in the MLflow UI
    deps = [_dep_path(dep) for dep in stage_definition(stage, dvc_yaml)["deps"]]
    if not deps:
        return tags
    md5 = _md5_builder(root)
    for path in deps:
        try:
            tags[f"dep.{path}.md5"] = md5(os.fspath(root / path))
        except FileNotFoundError:
            tags[f"dep.{path}.md5"] = "missing"
    return tags


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_metrics(stage: str, metrics: Mapping[str, Any], run: Run | None = None) -> Path:
    """Write metrics/<stage>.json (nested as given) and log its numbers to the run (dotted keys)."""
    path = METRICS_DIR / f"{stage}.json"
    write_json(path, dict(metrics))
    if run is not None:
        numbers = {key: value for key, value in flatten(metrics).items() if _is_number(value)}
        run.log_metrics(numbers)
    return path


def tracking_config(params: Mapping[str, Any]) -> TrackingConfig:
    """TrackingConfig from the `tracking:` section (uri, experiment, strict, artifact_location).

    With a local store (sqlite) and an S3 bucket in `storage:`, new experiments keep their
    artifacts in s3://<bucket>/<prefix>/mlflow; MLflow's S3 client is pointed at the
    storage endpoint.  A tracking server keeps its own `--artifacts-destination`.
    """
    from videor4.storage import mlflow_environment, s3_settings

    section = dict(params.get("tracking") or {})
    known = {"uri", "experiment", "strict", "artifact_location"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"unknown params tracking: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    defaults = TrackingConfig()
    config = TrackingConfig(
        tracking_uri=section.get("uri") or defaults.tracking_uri,
        artifact_location=section.get("artifact_location") or defaults.artifact_location,
        experiment=section.get("experiment") or defaults.experiment,
        strict=bool(section.get("strict", defaults.strict)),
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
                return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.2f}", " ".join(["dvc", *cmd[start + 1 :]])
    except psutil.Error:
        return None
    return None


def pipeline_identity() -> tuple[str | None, str, dict[str, str]]:
    """(key, readable name, tags) of the pipeline run grouping this invocation's stages."""
    import time

    invocation = dvc_invocation()
    if invocation is None:
        return None, "", {}
    key, command = invocation
    exp = os.environ.get("DVC_EXP_NAME")
    name = f"pipeline {exp or 'workspace'} {time.strftime('%Y-%m-%d %H:%M')}"
    tags = {"dvc.command": command, "videor4.role": "pipeline", "git.commit": _git("rev-parse", "HEAD") or "unknown"}
    if exp:
        tags["dvc.exp_name"] = exp
    return key, name, tags


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any], dvc_yaml: str | os.PathLike = "dvc.yaml") -> Iterator[Run]:
    """The stage's MLflow run: named after the stage, with its declared params and lineage tags,
    a child of the pipeline run of the `dvc repro` / `dvc exp run` it belongs to (which logs every param).

    Under a multi-process launch only the main process tracks; the others get an inactive run.
    """
    if not is_main_process():
        with _os_errors_in_one_line(stage):
            yield Run(stage, tracking_config(params))
        return
    key, name, tags = pipeline_identity()
    try:
        with start_child_run(
            stage,
            tracking_config(params),
            key,
            name,
            pipeline_params=params,
            pipeline_tags=tags,
            params=declared_params(stage, params, dvc_yaml),
            tags={**lineage_tags(stage, dvc_yaml), "launch.world_size": str(world_size())},
        ) as run, _os_errors_in_one_line(stage):
            yield run
    except TrackingError as exc:  # tracking.strict and MLflow failed
        fail(stage, exc)


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


def training_stage_args(doc: str, stages: Mapping[str, Any]):
    """`<stage> --init <checkpoint>`, the command line of every training stage."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("stage", choices=sorted(stages))
    parser.add_argument("--init", required=True, help="checkpoint to start from (a models/ directory)")
    return parser.parse_args()


def relaunch_distributed(params: Mapping[str, Any], script: str, args: list[str]) -> None:
    """With more than one process (params `launch:` or $VIDEOR4_NUM_PROCESSES ...), re-run this
    stage under `accelerate launch` and exit with its status.

    `dvc repro` then drives a multi-GPU node unchanged, and on a cluster each node runs its
    share of the same command (see README, "Scale-out").  A process already started by a
    launcher (RANK set) or a single-process setting returns at once.
    """
    from videor4.launch import launch_settings

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


def log_checkpoint(run: Run, path: str | os.PathLike, max_artifact_mb: float) -> dict[str, Any]:
    """Record a checkpoint directory on the run: its path and md5 (as DVC hashes it) always,
    the files themselves as an artifact when they are no larger than `max_artifact_mb`."""
    path = Path(path)
    size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    info = {"path": str(path), "md5": dep_md5(path), "size_mb": round(size_mb, 3)}
    run.set_tags({f"checkpoint.{k}": v for k, v in info.items()})
    if size_mb <= max_artifact_mb:
        run.log_artifact(path, artifact_path="checkpoint")
    return info


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
