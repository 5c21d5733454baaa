"""Two versions of the pipeline, question by question: the eval stage's predictions at a git
revision or experiment (read through `dvc.api.DVCFileSystem(rev=...)`) against the workspace's (or
another revision's).

    python benchmarks/compare_runs.py --before 61db554 [--after REV] [--repo DIR]
        [--out benchmarks/records/compare_runs.json]

Both versions must have evaluated the same questions: the same split (their metrics/eval.json's
"split", `eval.split`: val for experiments, test for the main pipeline's eval stage) of the same
data/built.  For each
checkpoint and mode: Acc before and after with Wilson intervals, the paired-bootstrap CI and
sign-flip p of after - before, accuracy per question kind, and how each rumination answer went
wrong (no answer, a wrong option letter after a right reading, a right reading copied wrong,
a crop that missed the text); and the perception-pretraining metrics of both versions.  A
revision's reports come from the DVC cache (or the remote) as its dvc.lock names them; `dvc pull`
at that revision if they are in neither.  Run it after `dvc repro`; nothing in the workspace
changes (checked with `git status`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from videor4.data.evidence import crop_covers
from videor4.rumination.protocol import check_arguments, phrase_reading
from videor4.rumination.trajectory import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import (  # noqa: E402
    REPORTS,
    check_unchanged,
    eval_split,
    git_status,
    load,
    paired,
    read_json,
    read_text,
    reader,
    samples_file,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent


def reports_at(fs) -> dict[str, str]:
    """The eval stage's report files in `fs`, by file name."""
    if not fs.exists(REPORTS):
        raise SystemExit(f"{REPORTS} is not there at that revision")
    return {Path(p).name: p for p in fs.ls(REPORTS, detail=False) if p.endswith(".jsonl")}


def common_split(before_fs, after_fs) -> str:
    """The split both versions' eval scored; exits when they scored different ones."""
    before, after = eval_split(before_fs), eval_split(after_fs)
    if before != after:
        raise SystemExit(
            f"the two versions' eval scored different splits ({before} before, {after} after): "
            "run one again with -S eval.split=<the other's>"
        )
    return after


def why_wrong(row: dict, sample: dict, margin: float) -> str:
    """How a rumination answer went wrong, from its trajectory (the first reason that applies)."""
    if row.get("prediction") is None:
        return "no_answer"
    if sample["question_kind"] != "read":
        return "wrong_" + sample["question_kind"]
    trajectory = Trajectory.from_dict(row["trajectory"])
    if phrase_reading(trajectory.final_text or "") in {e["text"] for e in sample["evidence"]}:
        return (
            "right_reading_wrong_option"
            if sample["problem_type"] == "multiple_choice"
            else "right_reading_copied_wrong"
        )
    crops = [  # the well-formed crop calls' boxes
        s.tool_call.arguments["bbox_2d"]
        for s in trajectory.steps
        if s.tool_call is not None and s.tool_call.name == "cropping" and check_arguments(s.tool_call) is None
    ]
    covered = any(crop_covers(box, e["bbox"], margin) for box in crops for e in sample["evidence"])
    return "misread" if covered else "crop_missed_text" if crops else "no_crop"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision or experiment name of the earlier version")
    ap.add_argument("--after", default=None, help="git revision or experiment name (default: the workspace)")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the repository (default: this one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/compare_runs.json")
    args = ap.parse_args()
    repo = args.repo.resolve()
    status = git_status(repo)
    before_fs, after_fs = reader(repo, args.before), reader(repo, args.after)
    split = common_split(before_fs, after_fs)
    samples = load(after_fs, samples_file(split))
    kinds = {i: s["question_kind"] for i, s in samples.items()}
    margin = float(yaml.safe_load(read_text(after_fs, "params.yaml"))["vision"]["crop_margin"])
    before, after = reports_at(before_fs), reports_at(after_fs)
    results: dict = {
        "script": "benchmarks/compare_runs.py",
        "before": args.before,
        "after": args.after or "workspace",
        "split": split,
        "checkpoints": {},
    }
    for name in sorted(set(before) & set(after)):
        checkpoint, _, mode = name.removesuffix(".jsonl").split(".")
        a, b = load(after_fs, after[name]), load(before_fs, before[name])
        if sorted(a) != sorted(b):
            raise SystemExit(f"{name}: the two versions evaluated different questions")
        ids = sorted(a)
        entry = {}
        for label, recs in (("before", b), ("after", a)):
            entry[label] = summary(recs, kinds)
            if mode == "rumination":  # {question kind: {how it went wrong: count}}
                wrong: dict[str, Counter] = defaultdict(Counter)
                for i in ids:
                    if not recs[i]["acc"]:
                        wrong[samples[i]["question_kind"]][why_wrong(recs[i], samples[i], margin)] += 1
                entry[label]["wrong"] = {k: dict(c.most_common()) for k, c in sorted(wrong.items())}
        d = entry["after_minus_before"] = paired(a, b)
        results["checkpoints"][f"{checkpoint}.{mode}"] = entry
        print(
            f"{checkpoint:8s} {mode:12s} {100 * entry['before']['acc']:5.1f} -> "
            f"{100 * entry['after']['acc']:5.1f}  {100 * d['difference']:+.1f} "
            f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] p {d['p']:.3f}"
        )
    results["pretrain"] = {
        label: read_json(fs, "metrics/pretrain.json") if fs.exists("metrics/pretrain.json") else None
        for label, fs in (("before", before_fs), ("after", after_fs))
    }
    check_unchanged(repo, status)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
