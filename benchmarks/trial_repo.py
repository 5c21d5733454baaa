"""What the trial benchmarks share: a scratch copy of the repository with changed params, whose
data and models are the workspace's (symlinked), and scoring of rumination predictions."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from videor4.core.statistics import paired_difference, wilson

ROOT = Path(__file__).resolve().parent.parent


def scratch_repo(work: Path, name: str, changes: dict) -> Path:
    """`work/name`: the repository without its outputs and caches, `data` and `models` linked to the
    workspace's, params.yaml with `changes` ({"section.key": value}) applied."""
    repo = work / name
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".venv", ".dvc", "mlruns", "mlartifacts", "mlflow.db", ".cache", "models", "reports", "data"
        ),
    )
    for link in ("data", "models"):
        (repo / link).symlink_to(ROOT / link)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        *path, last = key.split(".")
        section = params
        for part in path:
            section = section[part]
        section[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def load(path: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def summary(records: dict[str, dict], kinds: dict[str, str]) -> dict:
    ids = sorted(records)
    acc = [records[i]["acc"] for i in ids]
    ci = wilson(sum(acc), len(acc))
    by_kind = defaultdict(list)
    for i in ids:
        by_kind[kinds[i]].append(records[i]["acc"])
    return {
        "n": len(acc),
        "acc": ci.value,
        "wilson95": [ci.low, ci.high],
        "by_kind": {k: {"n": len(v), "acc": sum(v) / len(v)} for k, v in sorted(by_kind.items())},
    }


def trial_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }


def question_kinds() -> dict[str, str]:
    """{sample id: question kind} of the synthetic test split."""
    return {i: s["question_kind"] for i, s in load(ROOT / "data/built/samples_test.jsonl").items()}


def train_and_evaluate(
    repo: Path, work: Path, name: str, train: list[str], checkpoint: Path, env: dict[str, str]
) -> Path:
    """Run a stage's training command in the scratch repo, then `video-r4 eval` (rumination, the
    synthetic test split) on its checkpoint; returns the predictions file."""
    quiet = {
        "cwd": repo,
        "env": env,
        "check": True,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    started = time.perf_counter()
    subprocess.run([sys.executable, *train], **quiet)
    seconds = time.perf_counter() - started
    predictions = work / f"{name}.predictions.jsonl"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "video-r4"),
            "eval",
            "--model",
            str(checkpoint),
            "--set",
            "synthetic",
            "--root",
            "data/built",
            "--mode",
            "rumination",
            "--predictions",
            str(predictions),
        ],
        **quiet,
    )
    print(f"{name}: trained in {seconds:.0f} s", file=sys.stderr)
    return predictions


def scored(records: dict[str, dict], kinds: dict[str, str], references: dict[str, dict[str, dict]]) -> dict:
    """`summary` plus, for each reference run, the paired difference on the same questions."""
    entry = summary(records, kinds)
    for ref, recs in references.items():
        ids = sorted(recs)
        d = paired_difference([records[i]["acc"] for i in ids], [recs[i]["acc"] for i in ids])
        entry[f"minus_{ref}"] = {"difference": d.difference, "ci95": [d.low, d.high], "p": d.p_value}
    return entry


def run_trials(
    doc: str,
    default_out: Path,
    references: tuple[str, ...],
    variants: dict[str, Any],
    run_one: Callable[[str, Any, Path, dict[str, str]], tuple[Path, dict]],
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> None:
    """A trial benchmark's command line: each variant (or those `--only` names) is run by
    `run_one(name, spec, work, env)` → (its predictions, extra fields for its entry), scored
    against the pipeline's `references` on the same questions, and merged into `--out` (a run of
    some variants keeps the others' earlier results in the file).  `parents`: the caller's own
    options, parsed by the caller, listed in --help."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0], parents=list(parents))
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    env, kinds = trial_env(), question_kinds()
    reference = {name: load(ROOT / f"reports/eval/{name}.synthetic.rumination.jsonl") for name in references}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.update({name: summary(recs, kinds) for name, recs in reference.items()})
    work = Path(tempfile.mkdtemp(prefix=f"videor4-{default_out.stem}-"))
    for name, spec in variants.items():
        if args.only and name not in args.only:
            continue
        predictions, extra = run_one(name, spec, work, env)
        entry = scored(load(predictions), kinds, reference)
        print(name, json.dumps(entry), flush=True)
        results[name] = {**entry, **extra}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
