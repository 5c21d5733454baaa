"""CRP-SFT variants against the pipeline's own crp_sft, on the same val questions.

    python benchmarks/crp_sft_trials.py [--only NAME ...] [--jobs N] [--repo DIR] [--reuse]
        [--timeout-h H] [--split val|test] [--out benchmarks/records/crp_sft_trials.json]

Run it in a repository whose `dvc repro` is up to date (models/rl_d, models/crp_sft and
reports/eval present; the default: this one).  Each variant is a params change run as a queued
DVC experiment named `crp_sft-<variant>`, scored on the val split (`dvc exp run --queue -n
crp_sft-epochs_4 -S sft.crp.epochs=4 -S eval.split=val`, then `dvc queue start -j N`, waited for
with `dvc queue status`; `--split test` for the other).  DVC re-runs crp_sft (from
`curriculum.crp_sft_init`, models/rl_d as the curriculum has it) and what follows it (rl_c, eval,
figures) in its temporary copy under .dvc/tmp/exps; the workspace is not touched.  crp_sft's
rumination predictions on the synthetic val split (choices are made on val; the test split is the
main pipeline's eval stage's own, for the final numbers) are read from the experiment's commit
(`dvc.api.DVCFileSystem(rev=...)`, the eval stage's reports/eval; metrics/eval.json says which
split it scored) and compared question by question with the workspace's crp_sft and rl_d (read
from the experiment `reference-val`, `-S eval.split=val` alone, when the workspace's eval scored
test): Acc with its Wilson interval, accuracy per question kind, and the paired-bootstrap CI and
sign-flip p of the difference; the results file records the split.  The experiments stay listed
in `dvc exp show`; `dvc exp remove crp_sft-lr_3e-4 ...` removes them.

Why: CRP-SFT lowers held-out accuracy against the RL_d checkpoint it starts from (reading
questions fall while compare questions rise), so these ask whether it trains too little or too
much; and whether its crops miss because they are drawn in the clipped frame, where pretraining
never taught LOCATE (crop_in_frame: build_data re-runs with `data.synthesis.crp_crop_target=frame`;
the tokenizer trains on the build's SFT sets, so base_model and everything after it may re-run
too, about the whole pipeline's time).

Not here any more: the DRP-replay variants of the record (`replay_drp`, `replay_drp_epochs_4`:
CRP-SFT on sft_crp.jsonl and sft_drp.jsonl together, records/crp_sft_replay_trials.json).  The
crp_sft stage reads data/built/sft_crp.jsonl alone and no param mixes other trajectories in, so
they cannot run as a params experiment; the earlier, scratch-copy version of this script in git
history (benchmarks/crp_sft_trials.py at 424eb9f) ran them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import run_trials  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "lr_3e-4": {"sft.crp.learning_rate": 0.0003},
    "epochs_4": {"sft.crp.epochs": 4},
    # the data rebuilt with CRP's crops named in the frame as first shown, where pretraining's LOCATE
    # learnt to find text, instead of in the clipped frame
    "crop_in_frame": {"data.synthesis.crp_crop_target": "frame"},
}


if __name__ == "__main__":
    run_trials(
        __doc__,
        "benchmarks/crp_sft_trials.py",
        ROOT / "benchmarks/records/crp_sft_trials.json",
        checkpoint="crp_sft",
        references=("crp_sft", "rl_d"),
        variants=VARIANTS,
        prefix="crp_sft",
        metrics_file="metrics/crp_sft.json",
    )
