"""Two versions of the pipeline, question by question: the eval stage's predictions at a git
revision (read from the DVC cache by that revision's dvc.lock) against the workspace's.

    python benchmarks/compare_runs.py --before 61db554 [--out benchmarks/records/compare_runs.json]

Both versions must have evaluated the same test questions (the same data/built).  For each
checkpoint and mode: Acc before and after with Wilson intervals, the paired-bootstrap CI and
sign-flip p of after - before, accuracy per question kind, and how each rumination answer went
wrong (no answer, a wrong option letter after a right reading, a right reading copied wrong,
a crop that missed the text); and the perception-pretraining metrics of both versions.  Run it
after `dvc repro`; nothing in the workspace changes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from videor4.core.statistics import paired_difference
from videor4.data.evidence import crop_covers
from videor4.rumination.protocol import check_arguments, phrase_reading
from videor4.rumination.trajectory import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trial_repo import load, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".dvc/cache/files/md5"
REPORTS = "reports/eval"


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _cached(md5: str) -> Path:
    return CACHE / md5[:2] / md5[2:]


def reports_at(rev: str) -> dict[str, Path]:
    """The eval stage's report files as revision `rev` locked them, by file name (from the DVC cache)."""
    lock = yaml.safe_load(_git_show(rev, "dvc.lock"))
    outs = [o for o in lock["stages"]["eval"]["outs"] if o["path"] == REPORTS]
    if not outs:
        raise SystemExit(f"{rev}: dvc.lock has no {REPORTS} out")
    manifest = _cached(outs[0]["md5"])
    if not manifest.exists():
        raise SystemExit(
            f"{rev}: {REPORTS} is not in the DVC cache ({manifest}); "
            "run `dvc pull` or `dvc checkout` at that revision"
        )
    return {entry["relpath"]: _cached(entry["md5"]) for entry in json.loads(manifest.read_text())}


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
    ap.add_argument(
        "--before", required=True, help="git revision whose dvc.lock names the earlier eval reports"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/compare_runs.json")
    args = ap.parse_args()
    samples = load(ROOT / "data/built/samples_test.jsonl")
    kinds = {i: s["question_kind"] for i, s in samples.items()}
    margin = float(yaml.safe_load((ROOT / "params.yaml").read_text())["vision"]["crop_margin"])
    before = reports_at(args.before)
    after = {p.name: p for p in (ROOT / REPORTS).glob("*.jsonl")}
    results: dict = {"before": args.before, "after": "workspace", "checkpoints": {}}
    for name in sorted(set(before) & set(after)):
        checkpoint, _, mode = name.removesuffix(".jsonl").split(".")
        a, b = load(after[name]), load(before[name])
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
        d = paired_difference([a[i]["acc"] for i in ids], [b[i]["acc"] for i in ids])
        entry["after_minus_before"] = {"difference": d.difference, "ci95": [d.low, d.high], "p": d.p_value}
        results["checkpoints"][f"{checkpoint}.{mode}"] = entry
        print(
            f"{checkpoint:8s} {mode:12s} {100 * entry['before']['acc']:5.1f} -> "
            f"{100 * entry['after']['acc']:5.1f}  "
            f"{100 * d.difference:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] p {d.p_value:.3f}"
        )
    now = ROOT / "metrics/pretrain.json"
    results["pretrain"] = {
        "before": json.loads(_git_show(args.before, "metrics/pretrain.json")),
        "after": json.loads(now.read_text()) if now.exists() else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
