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

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import load, question_kinds, scored, scratch_repo, summary, train_and_evaluate, trial_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "steps_48": {"rl.rl_d.steps": 48},  # every RL_d prompt about once (48 x 4 = 192 of 156)
    "steps_96": {"rl.rl_d.steps": 96},  # about twice
}


def run_variant(name: str, changes: dict, work: Path, env: dict[str, str]) -> Path:
    repo = scratch_repo(work, name, changes)
    ckpt = work / f"{name}-rl_d"
    train = ["stages/rl.py", "rl_d", "--init", "models/drp_sft", "--data", "data/built/rl_d.jsonl", "--held-out", "data/built/samples_test.jsonl",
             "--out", str(ckpt), "--metrics", str(work / f"{name}.metrics.json"), "--curve", str(work / f"{name}.curve.json")]
    return train_and_evaluate(repo, work, name, train, ckpt, env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rl_trials.json")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    env, kinds = trial_env(), question_kinds()
    reference = {name: load(ROOT / f"reports/eval/{name}.synthetic.rumination.jsonl") for name in ("rl_d", "drp_sft")}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.update({name: summary(recs, kinds) for name, recs in reference.items()})
    work = Path(tempfile.mkdtemp(prefix="videor4-rl-trials-"))
    for name, changes in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        entry = scored(load(run_variant(name, changes, work, env)), kinds, reference)
        entry["changes"] = changes
        entry["rl_metrics"] = json.loads((work / f"{name}.metrics.json").read_text())
        results[name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "rl_metrics"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
