"""RL_d variants against the pipeline's own rl_d and drp_sft, on the same test questions.

    python benchmarks/rl_trials.py [--only NAME ...] [--out benchmarks/results/rl_trials.json]

Run it in a repository whose `dvc repro` is up to date (models/drp_sft, reports/eval present).
Each variant trains stage rl_d's code (`stages/rl.py rl_d`, from models/drp_sft as the
curriculum does) with changed params, in a scratch copy of the repo, and evaluates it in
rumination mode on the synthetic test split with `video-r4 eval`.  Compared question by
question with the pipeline's rl_d and drp_sft (Wilson interval, per-kind accuracy, paired
bootstrap CI and sign-flip p).  Nothing in the workspace changes.

Why: 16 GRPO steps of 4 prompts (64 of the 156 RL_d prompts) leave greedy accuracy where
drp_sft had it; this asks whether more steps move it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import run_trials, scratch_repo, train_and_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "steps_48": {"rl.rl_d.steps": 48},  # every RL_d prompt about once (48 x 4 = 192 of 156)
    "steps_96": {"rl.rl_d.steps": 96},  # about twice
}


def run_variant(name: str, changes: dict, work: Path, env: dict[str, str]) -> tuple[Path, dict]:
    """Train and evaluate one variant in a scratch copy of the repo: (its predictions, what it changed and the stage's metrics)."""
    repo = scratch_repo(work, name, changes)
    ckpt = work / f"{name}-rl_d"
    metrics = work / f"{name}.metrics.json"
    train = ["stages/rl.py", "rl_d", "--init", "models/drp_sft", "--data", "data/built/rl_d.jsonl", "--held-out", "data/built/samples_test.jsonl",
             "--out", str(ckpt), "--metrics", str(metrics), "--curve", str(work / f"{name}.curve.json")]
    predictions = train_and_evaluate(repo, work, name, train, ckpt, env)
    return predictions, {"changes": changes, "rl_metrics": json.loads(metrics.read_text())}


if __name__ == "__main__":
    run_trials(__doc__, ROOT / "benchmarks/results/rl_trials.json", ("rl_d", "drp_sft"), VARIANTS, run_variant)
