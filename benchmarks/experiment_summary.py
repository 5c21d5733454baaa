"""The headline numbers of a pipeline run (the workspace's, e.g. a `dvc exp run` applied, or an
experiment's or revision's with --rev), as JSON.

    python benchmarks/experiment_summary.py --name more-videos \
        --setting synthetic.n_videos=400 ... [--rev EXPERIMENT] [--repo DIR] \
        [--out benchmarks/records/<name>.json]

For an experiment whose val and test splits differ from the default's (a world change), question-by-
question pairing against the default is impossible; what stays paired is each stage against the
checkpoint it started from and rumination against the single pass, on the experiment's own
questions of the split its eval scored.  Experiments are scored on val (`dvc exp run -S
eval.split=val ...`: what a choice between settings is made on); the test split is the main
pipeline's eval stage's own, for the final numbers.  This collects those from `metrics/eval.json`,
with the split it scored (its "split"; test when it predates it: reported, and warned about when
test), the pretraining held-out metrics and the data build's counts, so that a result can be cited
after the workspace moves on.  The metrics files are read through `dvc.api.DVCFileSystem(rev=--rev)`
(the default: the workspace).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import EVAL_METRICS, read_json, reader  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN_KEYS = (
    "read_acc",
    "read_acc_ci95",
    "read_lowres_acc",
    "read_clip_acc",
    "locate_cover",
    "locate_clip_cover",
)
BUILD_KEYS = (
    "n_videos",
    "n_samples_train",
    "n_samples_val",
    "n_samples_test",
    "n_drp",
    "n_crp",
    "n_rl_d",
    "n_rl_c",
)


def summarize(repo: Path, rev: str | None = None) -> dict:
    """The run's numbers, "split" first: the synthetic split its eval scored."""
    fs = reader(repo, rev)
    eval_metrics = read_json(fs, EVAL_METRICS)
    evaluation, comparisons = eval_metrics["synthetic"], eval_metrics["comparisons"]["synthetic"]
    pretrain = read_json(fs, "metrics/pretrain.json")
    build = read_json(fs, "metrics/build_data.json")
    checkpoints = {}
    for name, cell in evaluation.items():
        checkpoints[name] = {
            mode: {"acc": cell[mode]["acc"], "acc_ci": cell[mode]["acc_ci"], "n": cell[mode]["n"]}
            for mode in ("rumination", "single_pass")
        }
        checkpoints[name]["rumination_by_kind"] = {
            kind: {k: v["rumination"][k] for k in ("acc", "acc_ci", "n")}
            for kind, v in cell["by_kind"].items()
        }
    return {
        "split": str(eval_metrics.get("split") or "test"),  # no "split": the eval stage scored test alone
        "build_data": {k: build.get(k) for k in BUILD_KEYS},  # n_samples_val: None before the val split
        "pretrain": {k: pretrain.get(k) for k in PRETRAIN_KEYS},
        "checkpoints": checkpoints,
        "stage_vs_init_rumination_acc": {
            k: v["rumination"]["acc"] for k, v in comparisons["stage_vs_init"].items()
        },
        "rumination_vs_single_pass_acc": {
            k: v["acc"] for k, v in comparisons["rumination_vs_single_pass"].items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument(
        "--setting", action="append", default=[], help="a -S key=value the experiment ran with (recorded)"
    )
    ap.add_argument("--rev", help="an experiment's name or a git revision (default: the workspace)")
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {
        "script": "benchmarks/experiment_summary.py",
        "experiment": args.name,
        "rev": args.rev or "workspace",
        "settings": args.setting,
        **summarize(args.repo.resolve(), args.rev),
    }
    if result["split"] != "val":
        print(
            f"note: this run's eval scored the {result['split']} split; choices between settings are made "
            "on val (dvc exp run -S eval.split=val)",
            file=sys.stderr,
        )
    out = args.out or ROOT / f"benchmarks/records/{args.name.replace('-', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"split: {result['split']}\n")
    print("| checkpoint | rumination Acc [95 % CI] | single pass |")
    print("|---|---:|---:|")
    for name, row in result["checkpoints"].items():
        r, s = row["rumination"], row["single_pass"]
        print(
            f"| {name} | {100 * r['acc']:.1f} [{100 * r['acc_ci'][0]:.1f}, {100 * r['acc_ci'][1]:.1f}] "
            f"(n={r['n']}) | {100 * s['acc']:.1f} |"
        )
    for pair, diff in result["stage_vs_init_rumination_acc"].items():
        print(
            f"{pair}: {100 * diff['diff']:+.1f} "
            f"[{100 * diff['ci'][0]:+.1f}, {100 * diff['ci'][1]:+.1f}], p = {diff['p']:.3f}"
        )


if __name__ == "__main__":
    main()
