"""The curiosity ablation: the queued experiment `dvc exp run --queue -n no-curiosity -S \
reward.lambda_cur=0.0 -S eval.split=val` against the default, question by question on val.

    python benchmarks/curiosity_ablation.py [--repo DIR] [--jobs N] [--reuse] [--timeout-h H]
        [--split val|test] [--out benchmarks/records/curiosity_ablation.json]

Run it in a repository whose `dvc repro` is up to date (the default: this one).  It queues the
experiment `no-curiosity` with `-S eval.split=val` (trials are scored on val; the test split is the
main pipeline's eval stage's own, for the final numbers; `--split test` for the other) and runs the
queue (`dvc queue start`, waited for with `dvc queue status`): DVC re-runs rl_d, crp_sft, rl_c, eval
and figures in its temporary copy under .dvc/tmp/exps, and the workspace is not touched.  The
experiment's per-question eval predictions are read from its commit (`dvc.api.DVCFileSystem(rev=...)`,
reports/eval, which metrics/eval.json says scored val), the default's from the workspace when its
eval scored val too, else from the experiment `reference-val` (`-S eval.split=val` alone: eval and
figures re-run on the workspace's checkpoints), and the two are compared on the same val questions:
rumination Acc of rl_d and rl_c with Wilson intervals and per question kind, the paired-bootstrap
CI and sign-flip p of "without - with curiosity", and tool use (clip / crop calls per question,
share of questions that used a tool).  Prints a Markdown table and writes the numbers, with the
split, as JSON.  The experiment stays listed in `dvc exp show` (`dvc exp apply no-curiosity` brings
its outputs into the workspace, `dvc exp remove no-curiosity` removes it; `--reuse` reads an
existing one back without running it again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import (  # noqa: E402
    on_split,
    paired,
    predictions,
    question_kinds,
    queue_options,
    reader,
    reference_experiment,
    references_on,
    require_up_to_date,
    run_queued,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ("rl_d", "rl_c")
NAME = "no-curiosity"
CHANGES = {"reward.lambda_cur": 0.0}


def tool_use(records: dict[str, dict]) -> dict[str, float]:
    rows, n = records.values(), len(records)
    return {
        "clip_calls": sum(r["clip_calls"] for r in rows) / n,
        "crop_calls": sum(r["crop_calls"] for r in rows) / n,
        "used_a_tool": sum(r["calls"] > 0 for r in rows) / n,
    }


def print_table(result: dict) -> None:
    print(
        "| checkpoint | λ_cur | Acc (rumination) [95 % CI] | clip / crop calls per question | used a tool |"
    )
    print("|---|---|---:|---:|---:|")
    for checkpoint, row in result["checkpoints"].items():
        for label, key in (("1.0", "with_curiosity"), ("0.0", "without_curiosity")):
            s = row[key]
            print(
                f"| {checkpoint} | {label} | {100 * s['acc']:.1f} "
                f"[{100 * s['wilson95'][0]:.1f}, {100 * s['wilson95'][1]:.1f}] (n={s['n']}) "
                f"| {s['clip_calls']:.2f} / {s['crop_calls']:.2f} | {100 * s['used_a_tool']:.0f} % |"
            )
        d = row["without_minus_with"]
        print(
            f"| {checkpoint} | 0.0 − 1.0 | {100 * d['difference']:+.1f} "
            f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], p = {d['p']:.3f} | | |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[queue_options()])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/curiosity_ablation.json")
    args = ap.parse_args()
    repo = args.repo.resolve()
    require_up_to_date(repo)
    started = time.perf_counter()
    ref = reference_experiment(repo, args.split)
    queued = {**ref, NAME: on_split(CHANGES, args.split)}
    experiments = run_queued(repo, queued, args.jobs, args.timeout_h, args.reuse, always_reuse=ref)
    seconds = time.perf_counter() - started
    exp = experiments[NAME]
    (default, default_from), ablated = references_on(repo, ref, experiments), reader(repo, exp.rev)
    result: dict = {
        "script": "benchmarks/curiosity_ablation.py",
        "experiment": f"dvc exp run --queue -n {NAME} -S reward.lambda_cur=0.0 -S eval.split={args.split}",
        "split": args.split,
        "default_from": default_from,
        "rev": exp.rev,
        "seconds": seconds,
        "checkpoints": {},
    }
    kinds, ablated_kinds = question_kinds(default, args.split), question_kinds(ablated, args.split)
    for checkpoint in CHECKPOINTS:
        with_cur = predictions(default, checkpoint, split=args.split)
        without = predictions(ablated, checkpoint, split=args.split)
        result["checkpoints"][checkpoint] = {
            "with_curiosity": {**summary(with_cur, kinds), **tool_use(with_cur)},
            "without_curiosity": {**summary(without, ablated_kinds), **tool_use(without)},
            "without_minus_with": paired(without, with_cur),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    reused = " (--reuse: an existing experiment is read back)" if args.reuse else ""
    print(f"\nqueue wall time: {seconds:.0f} s{reused}")


if __name__ == "__main__":
    main()
