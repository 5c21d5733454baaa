"""CRP-SFT variants against the pipeline's own crp_sft, on the same test questions.

    python benchmarks/crp_sft_trials.py [--out benchmarks/records/crp_sft_trials.json]

Run it in a repository whose `dvc repro` is up to date (models/rl_d, models/crp_sft and
reports/eval present).  Each variant trains stage crp_sft's code (`stages/sft.py crp_sft`, from
models/rl_d as the curriculum does) with one change, into a temporary folder, and evaluates it
in rumination mode on the synthetic test split with `video-r4 eval` (the stage's engine and
scoring).  Compared question by question with the pipeline's crp_sft and rl_d: Acc with its
Wilson interval, accuracy per question kind, and the paired-bootstrap CI and sign-flip p of
the difference.  Nothing in the workspace changes.

Why: CRP-SFT lowers held-out accuracy against the RL_d checkpoint it starts from (reading
questions fall while compare questions rise), so these ask whether it trains too little, too
much, or forgets reading that its data no longer shows; and whether its crops miss because they
are drawn in the clipped frame, where pretraining never taught LOCATE.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import run_trials, scratch_repo, train_and_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "lr_3e-4": {"changes": {"sft.crp.learning_rate": 0.0003}},
    "epochs_4": {"changes": {"sft.crp.epochs": 4}},
    "replay_drp": {"changes": {}, "data": ["data/built/sft_crp.jsonl", "data/built/sft_drp.jsonl"]},
    "replay_drp_epochs_4": {
        "changes": {"sft.crp.epochs": 4},
        "data": ["data/built/sft_crp.jsonl", "data/built/sft_drp.jsonl"],
    },
    # the data rebuilt with CRP's crops named in the frame as first shown, where pretraining's LOCATE
    # learnt to find text, instead of in the clipped frame
    "crop_in_frame": {
        "changes": {"data.synthesis.crp_crop_target": "frame"},
        "rebuild": True,
        "data": ["built/sft_crp.jsonl"],
    },
}


def run_variant(name: str, spec: dict, work: Path, env: dict[str, str]) -> tuple[Path, dict]:
    """Train and evaluate one variant in a scratch copy of the repo: (its predictions, what it changed)."""
    repo = scratch_repo(work, name, spec["changes"])
    if spec.get("rebuild"):  # build_data's own code with the changed params, into the scratch copy
        subprocess.run(
            [
                sys.executable,
                "stages/build_data.py",
                "--videos",
                "data/synthetic",
                "--out",
                "built",
                "--metrics",
                "built.metrics.json",
            ],
            cwd=repo,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    sources = spec.get("data", ["data/built/sft_crp.jsonl"])
    data = work / f"{name}.jsonl"
    with open(data, "wb") as out:
        for f in sources:
            out.write(((repo if spec.get("rebuild") else ROOT) / f).read_bytes())
    ckpt = work / f"{name}-crp_sft"
    train = [
        "stages/sft.py",
        "crp_sft",
        "--init",
        "models/rl_d",
        "--data",
        str(data),
        "--held-out",
        "data/built/samples_test.jsonl",
        "--out",
        str(ckpt),
        "--metrics",
        str(work / f"{name}.metrics.json"),
        "--curve",
        str(work / f"{name}.curve.json"),
    ]
    return train_and_evaluate(repo, work, name, train, ckpt, env), {
        "changes": spec["changes"],
        "data": sources,
    }


if __name__ == "__main__":
    run_trials(
        __doc__, ROOT / "benchmarks/records/crp_sft_trials.json", ("crp_sft", "rl_d"), VARIANTS, run_variant
    )
