"""RL stage variants against the pipeline's own RL checkpoint and the SFT one it starts from, \
on the same test questions.

    python benchmarks/rl_trials.py [--stage rl_d|rl_c] [--only NAME ...] [--out FILE]

Run it in a repository whose `dvc repro` is up to date (models/, reports/eval present).  Each
variant trains the stage's code (`stages/rl.py rl_d` from models/drp_sft, or `rl_c` from
models/crp_sft, as the curriculum does) with changed params, in a scratch copy of the repo, and
evaluates it in rumination mode on the synthetic test split with `video-r4 eval`.  Compared
question by question with the pipeline's RL checkpoint and its SFT start (Wilson interval,
per-kind accuracy, paired bootstrap CI and sign-flip p); results go to
benchmarks/records/<stage>_trials.json (rl_d: rl_trials.json, its first name).  Nothing in the
workspace changes.

Why: 16 GRPO steps of 4 prompts (64 of the 156 prompts) left greedy accuracy where the SFT
checkpoint had it; this asks whether more steps move it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import run_trials, scratch_repo, train_and_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGES = {  # stage: (checkpoint it starts from, results file, variants)
    "rl_d": (
        "drp_sft",
        "rl_trials.json",
        {
            "steps_48": {"rl.rl_d.steps": 48},  # every prompt about once (48 x 4 = 192 of 156)
            "steps_96": {"rl.rl_d.steps": 96},  # about twice
        },
    ),
    "rl_c": (
        "crp_sft",
        "rl_c_trials.json",
        {
            "steps_48": {"rl.rl_c.steps": 48},
            "steps_96": {"rl.rl_c.steps": 96},
        },
    ),
}


def variant_runner(stage: str, init: str):
    def run_variant(name: str, changes: dict, work: Path, env: dict[str, str]) -> tuple[Path, dict]:
        """Train and evaluate one variant in a scratch copy of the repo: (its predictions, what it
        changed and the stage's metrics)."""
        repo = scratch_repo(work, name, changes)
        ckpt = work / f"{name}-{stage}"
        metrics = work / f"{name}.metrics.json"
        train = [
            "stages/rl.py",
            stage,
            "--init",
            f"models/{init}",
            "--data",
            f"data/built/{stage}.jsonl",
            "--held-out",
            "data/built/samples_test.jsonl",
            "--out",
            str(ckpt),
            "--metrics",
            str(metrics),
            "--curve",
            str(work / f"{name}.curve.json"),
        ]
        predictions = train_and_evaluate(repo, work, name, train, ckpt, env)
        return predictions, {"changes": changes, "rl_metrics": json.loads(metrics.read_text())}

    return run_variant


if __name__ == "__main__":
    stage_arg = argparse.ArgumentParser(add_help=False)
    stage_arg.add_argument("--stage", choices=sorted(STAGES), default="rl_d")
    stage = stage_arg.parse_known_args()[0].stage
    init, results, variants = STAGES[stage]
    run_trials(
        __doc__,
        ROOT / "benchmarks/records" / results,
        (stage, init),
        variants,
        variant_runner(stage, init),
        parents=(stage_arg,),
    )
