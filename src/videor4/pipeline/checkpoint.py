"""A training stage's end: its curve and metrics written, its checkpoint recorded on the MLflow
run — path and DVC md5 always, and, up to `MAX_ARTIFACT_MB`, the files as the run's MLflow model,
registered as a new version of `video-r4-<stage>` (`pipeline.registry`).

Apart from the runner because only the training stages (pretrain, sft, rl) register models: a
data or eval stage's code never reaches the registry, so its declared deps stay what it imports.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videor4.core.io import write_json
from videor4.pipeline.lineage import LOCK_FILE, dep_md5, git_output, load_params
from videor4.pipeline.runner import write_metrics
from videor4.pipeline.tracking import Run

MAX_ARTIFACT_MB = 200  # larger checkpoints are referenced by path and md5 only


def finish_training(
    run: Run, args: argparse.Namespace, metrics: dict[str, Any], curve: list[dict[str, Any]], started: float
) -> None:
    """Write the curve, record the checkpoint on the run and write the metrics (with the stage's seconds)."""
    metrics["seconds"] = time.time() - started
    write_json(args.curve, curve)
    metrics["checkpoint"] = log_checkpoint(run, args.out, MAX_ARTIFACT_MB, args.stage, load_params())
    write_metrics(args.metrics, metrics, run)


def log_checkpoint(
    run: Run, path: str | os.PathLike, max_artifact_mb: float, stage: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Record a checkpoint directory on the run: its path and md5 (as DVC hashes it) always; when
    it is no larger than `max_artifact_mb`, the files as the run's MLflow model, registered as a new
    version of `video-r4-<stage>` tagged with the md5 and git commit, with the vision settings and
    rollout limits it answers under (README, "Seeing results")."""
    from videor4.pipeline.registry import log_checkpoint_model

    path = Path(path)
    size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    info = {"path": str(path), "md5": dep_md5(path), "size_mb": round(size_mb, 3)}
    run.set_tags({f"checkpoint.{k}": v for k, v in info.items()})
    if size_mb <= max_artifact_mb:
        config = {"vision": dict(params.get("vision") or {}), "rollout": dict(params.get("rollout") or {})}
        tags = {
            "dvc.md5": info["md5"],
            "dvc.path": info["path"],
            "dvc.stage": stage,
            "git.commit": git_output("rev-parse", "HEAD") or "unknown",
        }
        model = run.log_model(
            functools.partial(
                log_checkpoint_model,
                checkpoint=path,
                stage=stage,
                model_config=config,
                version_tags=tags,
                pip_requirements=model_requirements(),
            )
        )
        run.set_tags({f"model.{k}": v for k, v in model.items()})
    return info


def model_requirements(root: str | os.PathLike = ".") -> list[str]:
    """What a logged model needs installed: this torch and the lock file's exact versions."""
    from importlib import metadata

    lock = Path(root) / LOCK_FILE
    lines = lock.read_text(encoding="utf-8").splitlines() if lock.is_file() else []
    pins = [line.split("#")[0].strip() for line in lines]
    return [f"torch=={metadata.version('torch')}", *(p for p in pins if p and not p.startswith("-"))]
