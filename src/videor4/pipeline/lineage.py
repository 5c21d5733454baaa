"""Lineage: a stage's declaration in dvc.yaml, the params it declares, and the md5s of
its dependencies exactly as DVC records them, so an MLflow run names the code and data
that produced it.

Reads dvc.yaml and hashes with DVC's own code (dvc_data): the only part of the library,
with the runner beside it, that knows DVC.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from videor4.pipeline.tracking import flatten

DEFAULT_PARAMS = "params.yaml"
LOCK_FILE = "requirements.lock"  # the exact environment (`make lock`); torch is pinned by the set-up
# the packages whose versions decide what training produces, tagged on every run
KEY_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "peft",
    "deepspeed",
    "decord",
    "tokenizers",
    "dvc",
    "mlflow",
    "great-expectations",
)
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


def declared_params(
    stage: str, params: Mapping[str, Any], dvc_yaml: str | os.PathLike = "dvc.yaml"
) -> dict[str, Any]:
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


def entry_path(dep: Any) -> str:
    """The path of a dvc.yaml dep or out: a path, or (rarely) a one-key mapping {path: {options}}."""
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


def git_output(*args: str, cwd: str | os.PathLike = ".") -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
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
    commit = git_output("rev-parse", "HEAD", cwd=root) or "unknown"
    status = git_output("status", "--porcelain", "--untracked-files=no", cwd=root)
    tags = {
        "git.commit": commit,
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc.stage": stage,
        "videor4.version": __version__,
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown in the MLflow UI
    deps = [entry_path(dep) for dep in stage_definition(stage, dvc_yaml)["deps"]]
    if not deps:
        return tags
    md5 = _md5_builder(root)
    for path in deps:
        try:
            tags[f"dep.{path}.md5"] = md5(os.fspath(root / path))
        except FileNotFoundError:
            tags[f"dep.{path}.md5"] = "missing"
    return tags


def environment_tags(root: str | os.PathLike = ".") -> dict[str, str]:
    """Tags naming the environment a run used: the lock file's md5 and the installed versions
    of the packages that decide what training produces (`env.<package>`)."""
    import platform
    from importlib import metadata

    from videor4.core.io import files_md5

    lock = Path(root) / LOCK_FILE
    tags = {"env.python": platform.python_version(), "env.lock.file": LOCK_FILE}
    tags["env.lock.md5"] = files_md5([lock]) if lock.is_file() else "missing"
    for name in KEY_PACKAGES:
        try:
            tags[f"env.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            tags[f"env.{name}"] = "not installed"
    return {**tags, **cpu_tags()}


# the variables that pin CPU code paths (videor4.pipeline.runner.CPU_KERNEL_ENV), recorded as set
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def cpu_tags() -> dict[str, str]:
    """The CPU and the kernels torch uses on it: float results (so checkpoint bytes) depend on them."""
    import re

    import torch

    model = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else model
    config = torch.__config__.show()
    blas = re.search(r"Math Kernel Library Version ([\w.-]+)", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    tags = {
        "env.cpu.model": model,
        "env.cpu.count": str(os.cpu_count()),
        "env.torch.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env.torch.blas": f"MKL {blas.group(1)}" if blas else "not MKL",
        "env.torch.onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else "off",
    }
    tags.update({f"env.kernels.{name}": os.environ.get(name, "unset") for name in KERNEL_VARIABLES})
    return tags
