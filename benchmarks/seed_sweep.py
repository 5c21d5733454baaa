"""The training-seed sweep: the curriculum from direct_sft / drp_sft on at several `train_seed`s,
with and without the curiosity reward, each run scored by its own eval stage.

    python benchmarks/seed_sweep.py [--seeds 0 1 2] [--no-ablation] [--split test|val] [--jobs N]
        [--repo DIR] [--reuse [--baseline REV]] [--timeout-h H] [--out benchmarks/results/seed_sweep.json]

Run it in a repository whose `dvc repro` is up to date.  Every run but the workspace's own is a
queued DVC experiment (`dvc exp run --queue -n seed1 -S train_seed=1`, `-n nocur-seed1 -S
train_seed=1 -S reward.lambda_cur=0.0`, then `dvc queue start`): DVC re-runs direct_sft, drp_sft,
rl_d, crp_sft, rl_c, eval and figures for a seed (rl_d onward for the ablation) in its temporary
copy under .dvc/tmp/exps, sharing the data and the pretrained base; the workspace is not touched.

Split: test by default, since this is the curriculum's final measurement, not a choice: every
run's eval stage picks its headline checkpoint on val before it scores test (metrics/eval.json's
`best_checkpoint_choice`), and nothing here changes a default.  `--split val` (experiments named
`...-val`) is for a choice made from seeds, e.g. whether to keep the curiosity reward.

Per seed: each checkpoint's rumination Acc and direct_sft's single pass with Wilson intervals, the
val pick, the headline (rumination at the picked checkpoint - direct_sft single pass, paired, from
the run's eval.json), rl_d - drp_sft, and without - with curiosity for rl_d and rl_c, paired on the
same questions (bootstrap CI, sign-flip p).  Across seeds: mean, sd, min and max of each, and the
same paired test on the seed-averaged per-question score (each question's Acc averaged over the
seeds: an interval over questions for the mean over these seeds, not over all seeds; the spread
of the per-seed figures says how far a seed moves them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import (  # noqa: E402
    EVAL_METRICS,
    diff_text,
    on_split,
    paired,
    pct,
    predictions,
    question_kinds,
    queue_options,
    read_json,
    reader,
    require_up_to_date,
    run_queued,
    spread,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
RUMINATING = ("drp_sft", "rl_d", "crp_sft", "rl_c")
DIRECT = "direct_sft"
ABLATED = ("rl_d", "rl_c")  # the stages the curiosity reward trains
NO_CURIOSITY = {"reward.lambda_cur": 0.0}


def run_name(seed: int, ablated: bool, split: str) -> str:
    return f"{'nocur-' if ablated else ''}seed{seed}{'-val' if split == 'val' else ''}"


def plan(workspace: dict, seeds: list[int], ablation: bool, split: str) -> dict[tuple[int, bool], tuple]:
    """{(seed, ablated): (experiment name or None for the workspace, its params changes)}."""
    own_seed, curious = workspace["train_seed"], workspace["reward"]["lambda_cur"] != 0.0
    runs = {}
    for seed in seeds:
        for ablated in (False, True) if ablation else (False,):
            changes = {} if seed == own_seed else {"train_seed": seed}
            if ablated or not curious:
                changes |= NO_CURIOSITY if ablated else {"reward.lambda_cur": 1.0}
            if not changes and workspace["eval"]["split"] == split:
                runs[(seed, ablated)] = (None, {})
            else:
                runs[(seed, ablated)] = (run_name(seed, ablated, split), on_split(changes, split))
    return runs


def one_run(fs, split: str) -> dict:
    """A run's numbers and its per-question records (kept out of the JSON)."""
    metrics = read_json(fs, EVAL_METRICS)
    records = {c: predictions(fs, c, split=split) for c in RUMINATING}
    records[DIRECT] = predictions(fs, DIRECT, mode="single_pass", split=split)
    kinds = question_kinds(fs, split)
    choice = metrics["best_checkpoint_choice"]
    headline = metrics["comparisons"]["synthetic"]["rumination_best_vs_direct_single_pass"]["acc"]
    direct_by_format = metrics["synthetic"][DIRECT]["by_format"]
    return {
        "records": records,
        "best": choice["best"],
        "chance_multiple_choice": metrics["chance_multiple_choice"]["synthetic"],
        "val_rumination": {c: v["acc"] for c, v in choice.get("val_rumination", {}).items()},
        "acc": {c: summary(r, kinds) for c, r in records.items()},
        "direct_single_pass_by_format": {
            f: direct_by_format[f]["single_pass"]["acc"] for f in ("multiple_choice", "open")
        },
        "best_minus_direct": {"difference": headline["diff"], "ci95": headline["ci"], "p": headline["p"]},
        "rl_d_minus_drp_sft": paired(records["rl_d"], records["drp_sft"]),
    }


def seed_averaged(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per question, Acc averaged over the runs (all on the same questions)."""
    ids = sorted(runs[0])
    if any(sorted(r) != ids for r in runs):
        raise SystemExit("the seeds' runs answered different questions")
    return {i: {"acc": statistics.fmean(r[i]["acc"] for r in runs)} for i in ids}


def across_seeds(runs: list[dict]) -> dict:
    """Each figure's spread over the seeds' runs, and the paired tests on seed-averaged scores."""
    picked = [{i: r["records"][r["best"]][i] for i in r["records"][DIRECT]} for r in runs]
    return {
        "acc": {c: spread([r["acc"][c]["acc"] for r in runs]) for c in (*RUMINATING, DIRECT)},
        "best_minus_direct": spread([r["best_minus_direct"]["difference"] for r in runs]),
        "rl_d_minus_drp_sft": spread([r["rl_d_minus_drp_sft"]["difference"] for r in runs]),
        "direct_single_pass_by_format": {
            f: spread([r["direct_single_pass_by_format"][f] for r in runs])
            for f in ("multiple_choice", "open")
        },
        "best_minus_direct_paired": paired(
            seed_averaged(picked), seed_averaged([r["records"][DIRECT] for r in runs])
        ),
        "rl_d_minus_drp_sft_paired": paired(
            seed_averaged([r["records"]["rl_d"] for r in runs]),
            seed_averaged([r["records"]["drp_sft"] for r in runs]),
        ),
    }


def curiosity(read: dict[tuple[int, bool], dict], seeds: list[int]) -> dict:
    """Without - with the curiosity reward, per seed and on seed-averaged scores, for the RL stages."""
    per_seed = {}
    for s in seeds:
        with_cur, without = read[(s, False)], read[(s, True)]
        per_seed[str(s)] = {
            c: {
                "with": with_cur["acc"][c],
                "without": without["acc"][c],
                "without_minus_with": paired(without["records"][c], with_cur["records"][c]),
            }
            for c in ABLATED
        } | {
            "val_rumination_without": without["val_rumination"],
            "best_without": without["best"],
            "best_minus_direct_without": without["best_minus_direct"],
        }
    return {
        "per_seed": per_seed,
        "mean_difference": {
            c: spread([per_seed[str(s)][c]["without_minus_with"]["difference"] for s in seeds])
            for c in ABLATED
        },
        "seed_averaged": {
            c: paired(
                seed_averaged([read[(s, True)]["records"][c] for s in seeds]),
                seed_averaged([read[(s, False)]["records"][c] for s in seeds]),
            )
            for c in ABLATED
        },
    }


def print_table(result: dict) -> None:
    seeds = result["seeds"]
    print(f"split: {result['split']} (n = {result['n_questions']} questions per run)\n")
    print(
        "| seed | "
        + " | ".join(RUMINATING)
        + f" | {DIRECT} single pass | val pick | pick − direct | rl_d − drp_sft |"
    )
    print("|---|" + "---:|" * (len(RUMINATING) + 4))
    for s in seeds:
        run = result["runs"][str(s)]
        accs = " | ".join(pct(run["acc"][c]["acc"]) for c in (*RUMINATING, DIRECT))
        print(
            f"| {s} | {accs} | {run['best']} | {diff_text(run['best_minus_direct'])} "
            f"| {diff_text(run['rl_d_minus_drp_sft'])} |"
        )
    across = result["across_seeds"]
    accs = " | ".join(
        f"{pct(across['acc'][c]['mean'])} ± {pct(across['acc'][c]['sd'])}" for c in (*RUMINATING, DIRECT)
    )
    print(
        f"| mean ± sd | {accs} | | {pct(across['best_minus_direct']['mean'])} ± "
        f"{pct(across['best_minus_direct']['sd'])} | {pct(across['rl_d_minus_drp_sft']['mean'])} ± "
        f"{pct(across['rl_d_minus_drp_sft']['sd'])} |"
    )
    print(
        "\nseed-averaged, paired over questions: "
        f"pick − direct {diff_text(across['best_minus_direct_paired'])}; "
        f"rl_d − drp_sft {diff_text(across['rl_d_minus_drp_sft_paired'])}"
    )
    by_format = across["direct_single_pass_by_format"]
    print(
        f"{DIRECT} single pass by format, mean ± sd over seeds: multiple choice "
        f"{pct(by_format['multiple_choice']['mean'])} ± {pct(by_format['multiple_choice']['sd'])} "
        f"(chance {pct(result['chance_multiple_choice'])}), open {pct(by_format['open']['mean'])} ± "
        f"{pct(by_format['open']['sd'])}"
    )
    if "curiosity" in result:
        print("\n| seed | " + " | ".join(f"{c}: without − with curiosity" for c in ABLATED) + " |")
        print("|---|" + "---:|" * len(ABLATED))
        for s in seeds:
            row = result["curiosity"]["per_seed"][str(s)]
            print(f"| {s} | " + " | ".join(diff_text(row[c]["without_minus_with"]) for c in ABLATED) + " |")
        avg = result["curiosity"]["seed_averaged"]
        print("| seed-averaged | " + " | ".join(diff_text(avg[c]) for c in ABLATED) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[queue_options()])
    ap.set_defaults(split="test")  # the final measurement; nothing is chosen from it (see above)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-ablation", dest="ablation", action="store_false", help="skip lambda_cur=0.0")
    ap.add_argument(
        "--baseline",
        default=None,
        help="with --reuse: the commit the experiments were queued from, when HEAD has moved on since",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/seed_sweep.json")
    args = ap.parse_args()
    repo = args.repo.resolve()
    require_up_to_date(repo)
    workspace = yaml.safe_load((repo / "params.yaml").read_text())
    runs = plan(workspace, args.seeds, args.ablation, args.split)
    queued = {name: changes for name, changes in runs.values() if name}
    started = time.perf_counter()
    experiments = (
        run_queued(repo, queued, args.jobs, args.timeout_h, args.reuse, baseline=args.baseline)
        if queued
        else {}
    )
    seconds = time.perf_counter() - started
    read = {
        key: one_run(reader(repo, experiments[name].rev if name else None), args.split)
        for key, (name, _) in runs.items()
    }
    main_runs = [read[(s, False)] for s in args.seeds]
    result: dict = {
        "script": "benchmarks/seed_sweep.py",
        "split": args.split,
        "seeds": args.seeds,
        "n_questions": main_runs[0]["acc"][DIRECT]["n"],
        "chance_multiple_choice": main_runs[0]["chance_multiple_choice"],
        "runs_from": {
            f"{s}{' no curiosity' if a else ''}": name or "workspace" for (s, a), (name, _) in runs.items()
        },
        "revs": {name: experiments[name].rev for name in queued},
        "baseline": args.baseline or "HEAD",
        "queue_seconds": seconds,
        "runs": {
            str(s): {k: v for k, v in r.items() if k != "records"} for s, r in zip(args.seeds, main_runs)
        },
    }
    result["across_seeds"] = across_seeds(main_runs)
    if args.ablation:
        result["curiosity"] = curiosity(read, args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {args.out}; queue wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
