"""RL stage variants against the pipeline's own RL checkpoint and the SFT one it starts from, \
on the same val questions.

    python benchmarks/rl_trials.py [--stage rl_d|rl_c] [--only NAME ...] [--jobs N] [--repo DIR]
        [--reuse] [--timeout-h H] [--split val|test] [--out FILE]

Run it in a repository whose `dvc repro` is up to date (models/, reports/eval present; the
default: this one).  Each variant is a params change run as a queued DVC experiment named
`<stage>-<variant>`, scored on the val split (`dvc exp run --queue -n rl_d-steps_48 -S
rl.rl_d.steps=48 -S eval.split=val`, then `dvc queue start -j N`, waited for with `dvc queue
status`; `--split test` for the other).  DVC re-runs the stage and everything downstream of it (for
rl_d: rl_d, crp_sft, rl_c, eval, figures) in its temporary copy under .dvc/tmp/exps; the workspace
is not touched.  The stage's checkpoint's rumination predictions on the synthetic val split
(choices are made on val; the test split is the main pipeline's eval stage's own, for the final
numbers) are read from the experiment's commit (`dvc.api.DVCFileSystem(rev=...)`, the eval stage's
reports/eval; metrics/eval.json says which split it scored) and compared question by question
with the workspace's pipeline RL checkpoint and its SFT start (read from the experiment
`reference-val`, `-S eval.split=val` alone, when the workspace's eval scored test): Wilson
interval, per-kind accuracy, paired bootstrap CI and sign-flip p.  Results go to
benchmarks/records/<stage>_trials.json (rl_d: rl_trials.json, its first name) with the split and
each experiment's name, commit and the stage's metrics.  The experiments stay
listed in `dvc exp show`; `dvc exp remove rl_d-steps_16 ...` removes them.

Why: does GRPO for longer move greedy accuracy?  rl_trials.json (test, an earlier version) had
16 steps as rl_d's default and 48 / 96 as variants, and 96 became the default on test;
rl_trials_val.json (val, 96 the default, 16 / 48 the variants) found 16 and 96 tied, and rl_d
runs 16 steps again, so its variants are now 48 and 96 steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import run_trials  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGES = {  # stage: (checkpoint it starts from, results file, variants)
    "rl_d": (
        "drp_sft",
        "rl_trials.json",
        {
            "steps_48": {"rl.rl_d.steps": 48},  # every prompt about once (48 x 4 = 192 of 156)
            "steps_96": {"rl.rl_d.steps": 96},  # every prompt about twice: the default chosen on test
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


if __name__ == "__main__":
    stage_arg = argparse.ArgumentParser(add_help=False)
    stage_arg.add_argument("--stage", choices=sorted(STAGES), default="rl_d")
    stage = stage_arg.parse_known_args()[0].stage
    init, results, variants = STAGES[stage]
    run_trials(
        __doc__,
        "benchmarks/rl_trials.py",
        ROOT / "benchmarks/records" / results,
        checkpoint=stage,
        references=(stage, init),
        variants=variants,
        prefix=stage,
        metrics_file=f"metrics/{stage}.json",
        parents=(stage_arg,),
    )
