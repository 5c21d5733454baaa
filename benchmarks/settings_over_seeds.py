"""A setting of the DRP phase (DRP-SFT or RL_d) chosen over training seeds on val: drp_sft's and
rl_d's val rumination Acc at each seed for each arm (a value of one setting), read back from
experiments that have run.

    python benchmarks/settings_over_seeds.py --repo DIR --run ARM SEED REV [--run ...]
        [--out benchmarks/records/<setting>_over_seeds_val.json]

Each `--run` names the revision (an experiment's name or commit, or `workspace`) whose curriculum
ran with the arm's setting at `train_seed` SEED, e.g. the seed sweep's `seed1` (the defaults,
test scored) and `rl_d-lr_1e-4-seed1-val` (queued as `dvc exp run --queue -n rl_d-lr_1e-4-seed1-val
-S train_seed=1 -S +rl.rl_d.learning_rate=0.0001 -S eval.split=val`).  A revision whose eval stage
scored val gives per-question predictions (Wilson interval, rl_d - drp_sft paired, and
direct_sft's single pass, the baseline a DRP-SFT setting moves too); one that scored test gives
val's aggregate Acc from its `best_checkpoint_choice` (the eval stage's val pick), so the test
split is never read.  Where one seed has per-question records for two arms, drp_sft and rl_d are
each paired between them (an RL_d setting leaves drp_sft as it is: its pair reads +0.0).

The rule, fixed before the numbers are read: the arm with the highest mean rl_d val Acc over the
seeds every arm ran (rl_d ends the DRP phase and starts CRP-SFT); a tie goes to the arm named
first by the first `--run` (name the default, or the cheapest, first).  Uses so far:
- RL_d's steps (16, 96): one seed's val tied them (benchmarks/records/rl_trials_val.json), and the
  seed sweep on test then found no RL_d gain at 16 steps (records/rl_steps_over_seeds_val.json).
- RL_d's learning rate and rollouts per prompt (3e-5 and G 8, the defaults; 1e-4; G 16): both
  defaults were set on test in earlier work (records/rl_settings_over_seeds_val.json).
- DRP-SFT's epochs (4, the default; 6, with direct_sft's kept equal): set in early work and never
  compared (records/drp_sft_epochs_over_seeds_val.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import (  # noqa: E402
    EVAL_METRICS,
    accuracy,
    diff_text,
    eval_split,
    paired,
    pct,
    predictions,
    read_json,
    reader,
    spread,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ("drp_sft", "rl_d")  # what the DRP phase trains; a DRP-SFT setting moves both
BASELINE = "direct_sft"  # the single pass trained to answer: a DRP-SFT setting keeps its budget equal
RULE = "highest mean rl_d val Acc over the seeds; a tie goes to the arm named first"


def val_scores(fs) -> tuple[dict[str, dict], dict[str, dict] | None]:
    """({checkpoint: {acc, n, wilson95}} on val, {checkpoint: per-question records} or None)."""
    if eval_split(fs) == "val":
        records = {c: predictions(fs, c, split="val") for c in CHECKPOINTS}
        scores = {c: accuracy(recs) for c, recs in records.items()}
        scores[f"{BASELINE}_single"] = accuracy(predictions(fs, BASELINE, mode="single_pass", split="val"))
        return scores, records
    choice = read_json(fs, EVAL_METRICS)["best_checkpoint_choice"]["val_rumination"]
    return {
        c: {"n": choice[c]["n"], "acc": choice[c]["acc"], "wilson95": choice[c]["acc_ci"]}
        for c in CHECKPOINTS
    }, None


def read_runs(repo: Path, named: list[list[str]]) -> tuple[dict[str, dict[int, dict]], dict]:
    """({arm: {seed: entry}} in the order the arms are first named, {(arm, seed): {checkpoint:
    per-question val records}, where scored})."""
    runs: dict[str, dict[int, dict]] = {}
    records: dict[tuple[str, int], dict] = {}
    for arm, seed, rev in named:
        seed = int(seed)
        scores, recs = val_scores(reader(repo, None if rev == "workspace" else rev))
        entry = {"rev": rev, **scores, "rl_d_minus_drp_sft": scores["rl_d"]["acc"] - scores["drp_sft"]["acc"]}
        if recs:
            records[(arm, seed)] = recs
            entry["rl_d_minus_drp_sft_paired"] = paired(recs["rl_d"], recs["drp_sft"])
        runs.setdefault(arm, {})[seed] = entry
    return runs, records


def choose(runs: dict[str, dict[int, dict]], records: dict) -> dict:
    """Each arm's spread over the seeds every arm ran, the pairs (a later-named arm minus an
    earlier one), and the rule's pick: a tie goes to the arm named first."""
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values())))
    if not seeds:
        raise SystemExit("no seed has a run in every arm")
    arms = {
        arm: {
            "rl_d_val_acc": spread([by_seed[s]["rl_d"]["acc"] for s in seeds]),
            "drp_sft_val_acc": spread([by_seed[s]["drp_sft"]["acc"] for s in seeds]),
            "rl_d_minus_drp_sft": spread([by_seed[s]["rl_d_minus_drp_sft"] for s in seeds]),
        }
        for arm, by_seed in runs.items()
    }
    best = max(arm["rl_d_val_acc"]["mean"] for arm in arms.values())
    order = list(runs)
    pairs = {
        f"{b}_minus_{a}_seed{s}": {c: paired(records[(b, s)][c], records[(a, s)][c]) for c in CHECKPOINTS}
        for s in seeds
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if (a, s) in records and (b, s) in records
    }
    return {
        "split": "val",
        "rule": RULE,
        "seeds": seeds,
        "runs": {arm: {str(s): e for s, e in by_seed.items()} for arm, by_seed in runs.items()},
        "arms": arms,
        "paired_same_seed": pairs,
        "chosen": next(arm for arm in order if arms[arm]["rl_d_val_acc"]["mean"] == best),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--run", nargs=3, action="append", required=True, metavar=("ARM", "SEED", "REV"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    chosen = choose(*read_runs(args.repo.resolve(), args.run))
    result = {"script": "benchmarks/settings_over_seeds.py", **chosen}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result["arms"]))
    for arm, spreads in result["arms"].items():
        acc, drp, gain = spreads["rl_d_val_acc"], spreads["drp_sft_val_acc"], spreads["rl_d_minus_drp_sft"]
        print(
            f"{arm:>{width}}: rl_d val Acc {pct(acc['mean'])} ± {pct(acc['sd'])} "
            f"({', '.join(map(pct, acc['per_seed']))}); drp_sft {pct(drp['mean'])} ± {pct(drp['sd'])}; "
            f"rl_d - drp_sft {100 * gain['mean']:+.1f} ± {pct(gain['sd'])}"
        )
    for name, pair in result["paired_same_seed"].items():
        print(f"{name}: " + "; ".join(f"{c} {diff_text(d)}" for c, d in pair.items()))
    print(f"chosen: {result['chosen']} (seeds {result['seeds']}); wrote {args.out}")


if __name__ == "__main__":
    main()
