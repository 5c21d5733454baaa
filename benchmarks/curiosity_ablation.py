"""The curiosity ablation: `dvc exp run -S reward.lambda_cur=0.0` against the default, question by question.

    python benchmarks/curiosity_ablation.py [--repo DIR] [--out benchmarks/records/curiosity_ablation.json]

Run it in a repository whose `dvc repro` is up to date (the default: this one).  It keeps the
default's per-question eval predictions (`reports/eval`), runs the experiment in the workspace
(DVC re-runs rl_d, crp_sft, rl_c and eval; the workspace is left holding the experiment's
outputs, `dvc exp apply` / `dvc checkout` move between them), and compares the two on the same
test questions: rumination Acc of rl_d and rl_c with Wilson intervals, the paired-bootstrap CI
and sign-flip p of "without - with curiosity", and tool use (clip / crop calls per question,
share of questions that used a tool).  Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from videor4.core.statistics import paired_difference, wilson

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ("rl_d", "rl_c")


def load(predictions: Path, checkpoint: str) -> list[dict]:
    path = predictions / f"{checkpoint}.synthetic.rumination.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tool_use(records: list[dict]) -> dict[str, float]:
    n = len(records)
    return {
        "clip_calls": sum(r["clip_calls"] for r in records) / n,
        "crop_calls": sum(r["crop_calls"] for r in records) / n,
        "used_a_tool": sum(r["calls"] > 0 for r in records) / n,
    }


def summary(records: list[dict]) -> dict:
    hits = sum(r["acc"] for r in records)
    ci = wilson(hits, len(records))
    return {"acc": hits / len(records), "acc_ci": [ci.low, ci.high], "n": len(records), **tool_use(records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/curiosity_ablation.json")
    args = ap.parse_args()
    repo = args.repo.resolve()
    status = subprocess.run(["dvc", "status"], cwd=repo, capture_output=True, text=True, check=True).stdout
    if "changed" in status or "modified" in status:
        sys.exit(f"error: {repo}: dvc status is not clean; run dvc repro first")
    with tempfile.TemporaryDirectory() as tmp:
        default = Path(tmp) / "default"
        shutil.copytree(repo / "reports/eval", default)
        started = time.perf_counter()
        subprocess.run(
            ["dvc", "exp", "run", "-n", "no-curiosity", "-S", "reward.lambda_cur=0.0"], cwd=repo, check=True
        )
        seconds = time.perf_counter() - started
        result: dict = {
            "experiment": "dvc exp run -S reward.lambda_cur=0.0",
            "seconds": seconds,
            "checkpoints": {},
        }
        for checkpoint in CHECKPOINTS:
            with_cur, without = load(default, checkpoint), load(repo / "reports/eval", checkpoint)
            diff = paired_difference(
                [r["acc"] for r in without],
                [r["acc"] for r in with_cur],
                [r["sample_id"] for r in without],
                [r["sample_id"] for r in with_cur],
            )
            result["checkpoints"][checkpoint] = {
                "with_curiosity": summary(with_cur),
                "without_curiosity": summary(without),
                "without_minus_with": diff.to_dict(),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| checkpoint | λ_cur | Acc (rumination) [95 % CI] | clip / crop calls per question | used a tool |"
    )
    print("|---|---|---:|---:|---:|")
    for checkpoint, row in result["checkpoints"].items():
        for label, key in (("1.0", "with_curiosity"), ("0.0", "without_curiosity")):
            s = row[key]
            print(
                f"| {checkpoint} | {label} | {100 * s['acc']:.1f} "
                f"[{100 * s['acc_ci'][0]:.1f}, {100 * s['acc_ci'][1]:.1f}] (n={s['n']}) "
                f"| {s['clip_calls']:.2f} / {s['crop_calls']:.2f} | {100 * s['used_a_tool']:.0f} % |"
            )
        d = row["without_minus_with"]
        print(
            f"| {checkpoint} | 0.0 − 1.0 | {100 * d['diff']:+.1f} "
            f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}], p = {d['p']:.3f} | | |"
        )
    print(f"\nexperiment wall time: {seconds:.0f} s")


if __name__ == "__main__":
    main()
