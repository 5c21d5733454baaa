"""RL_d's step count chosen over training seeds on val: rl_d's val rumination Acc at each seed for
each step count, read back from experiments that have run.

    python benchmarks/rl_steps_over_seeds.py --repo DIR --run STEPS SEED REV [--run ...]
        [--out benchmarks/records/rl_steps_over_seeds_val.json]

Each `--run` names the revision (an experiment's name or commit, or `workspace`) whose curriculum
ran RL_d for STEPS steps at `train_seed` SEED, e.g. the seed sweep's `seed1` (16 steps, test
scored) and `rl_d-steps_96-seed1-val` (queued as `dvc exp run --queue -n rl_d-steps_96-seed1-val
-S train_seed=1 -S rl.rl_d.steps=96 -S eval.split=val`).  A revision whose eval stage scored val
gives per-question predictions (Wilson interval, rl_d - drp_sft paired); one that scored test
gives val's aggregate Acc from its `best_checkpoint_choice` (the eval stage's val pick), so the
test split is never read.  Where one seed has per-question records for two step counts, they are
paired too.

Why: one seed's val tied 16 and 96 steps (benchmarks/records/rl_trials_val.json), and the seed
sweep on test then found no RL_d gain at 16 steps.  The rule, fixed before these numbers were
read: the step count with the highest mean rl_d val Acc over the seeds; a tie goes to fewer steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import (  # noqa: E402
    EVAL_METRICS,
    diff_text,
    eval_split,
    paired,
    pct,
    predictions,
    read_json,
    reader,
    spread,
)

from videor4.core.statistics import wilson  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ("drp_sft", "rl_d")  # RL_d's steps move rl_d alone; drp_sft is the same at a seed


def val_scores(fs) -> tuple[dict[str, dict], dict[str, dict] | None]:
    """({checkpoint: {acc, n, wilson95}} on val, {checkpoint: per-question records} or None)."""
    if eval_split(fs) == "val":
        records = {c: predictions(fs, c, split="val") for c in CHECKPOINTS}
        scores = {}
        for c, recs in records.items():
            ci = wilson(sum(r["acc"] for r in recs.values()), len(recs))
            scores[c] = {"acc": ci.value, "n": len(recs), "wilson95": [ci.low, ci.high]}
        return scores, records
    choice = read_json(fs, EVAL_METRICS)["best_checkpoint_choice"]["val_rumination"]
    return {
        c: {"acc": choice[c]["acc"], "n": choice[c]["n"], "wilson95": choice[c]["acc_ci"]}
        for c in CHECKPOINTS
    }, None


def read_runs(repo: Path, named: list[list[str]]) -> tuple[dict[int, dict[int, dict]], dict]:
    """({steps: {seed: entry}}, {(steps, seed): rl_d's per-question val records, where scored})."""
    runs: dict[int, dict[int, dict]] = {}
    records: dict[tuple[int, int], dict] = {}
    for steps, seed, rev in named:
        steps, seed = int(steps), int(seed)
        scores, recs = val_scores(reader(repo, None if rev == "workspace" else rev))
        entry = {"rev": rev, **scores, "rl_d_minus_drp_sft": scores["rl_d"]["acc"] - scores["drp_sft"]["acc"]}
        if recs:
            records[(steps, seed)] = recs["rl_d"]
            entry["rl_d_minus_drp_sft_paired"] = paired(recs["rl_d"], recs["drp_sft"])
        runs.setdefault(steps, {})[seed] = entry
    return runs, records


def choose(runs: dict[int, dict[int, dict]], records: dict) -> dict:
    """Each step count's spread over the seeds every step count ran, the pairs, and the rule's pick."""
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values())))
    if not seeds:
        raise SystemExit("no seed has a run at every step count")
    arms = {
        steps: {
            "rl_d_val_acc": spread([by_seed[s]["rl_d"]["acc"] for s in seeds]),
            "rl_d_minus_drp_sft": spread([by_seed[s]["rl_d_minus_drp_sft"] for s in seeds]),
        }
        for steps, by_seed in sorted(runs.items())
    }
    best = max(arm["rl_d_val_acc"]["mean"] for arm in arms.values())
    pairs = {
        f"{b}_minus_{a}_seed{s}": paired(records[(b, s)], records[(a, s)])
        for s in seeds
        for a in sorted(runs)
        for b in sorted(runs)
        if a < b and (a, s) in records and (b, s) in records
    }
    return {
        "split": "val",
        "rule": "highest mean rl_d val Acc over the seeds; a tie goes to fewer steps",
        "seeds": seeds,
        "runs": {str(k): {str(s): e for s, e in v.items()} for k, v in sorted(runs.items())},
        "arms": {str(k): v for k, v in arms.items()},
        "paired_same_seed": pairs,
        "chosen_steps": min(steps for steps, arm in arms.items() if arm["rl_d_val_acc"]["mean"] == best),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--run", nargs=3, action="append", required=True, metavar=("STEPS", "SEED", "REV"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/rl_steps_over_seeds_val.json")
    args = ap.parse_args()
    result = {
        "script": "benchmarks/rl_steps_over_seeds.py",
        **choose(*read_runs(args.repo.resolve(), args.run)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for steps, arm in result["arms"].items():
        acc, gain = arm["rl_d_val_acc"], arm["rl_d_minus_drp_sft"]
        print(
            f"{steps:>4} steps: rl_d val Acc {pct(acc['mean'])} ± {pct(acc['sd'])} "
            f"({', '.join(map(pct, acc['per_seed']))}); rl_d - drp_sft "
            f"{100 * gain['mean']:+.1f} ± {pct(gain['sd'])}"
        )
    for name, d in result["paired_same_seed"].items():
        print(f"{name}: {diff_text(d)}")
    print(f"chosen: {result['chosen_steps']} steps (seeds {result['seeds']}); wrote {args.out}")


if __name__ == "__main__":
    main()
