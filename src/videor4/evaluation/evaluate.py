"""Evaluation of the curriculum's checkpoints: single pass vs rumination, the test-time
scaling curve, tool use, and the paper-style table.

Every checkpoint answers every question of every eval set with the shared
`RolloutEngine`, greedily, under a tool budget of k = 0..K calls (`max_steps`).  With the
budget spent the tool-call token is banned, so the model answers from what it has seen:
budget 0 is the single pass (the low-resolution frames only), budget K is rumination.

Greedy decoding makes the budgets cheap to sweep: a rollout that made at most k calls
under budget k + 1 never met its limit, so under budget k it is the same rollout.  Only
the questions that used more than k calls are decoded again at budget k.

Every Acc / ANLS is reported with its n and a 95 % interval, and every "this beats that"
(rumination vs single pass, a stage vs the checkpoint it was trained from) as a paired
difference with its interval and p-value (`videor4.core.statistics`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videor4.core.params import fill, section
from videor4.core.scoring import score_answer
from videor4.core.statistics import (
    RESAMPLES,
    Estimate,
    format_estimate,
    format_p,
    mean_ci,
    paired_difference,
    proportion_ci,
)
from videor4.train.lifecycle import curriculum_params

SINGLE_PASS, RUMINATION = "single_pass", "rumination"
DIRECT = "direct_sft"  # the single-pass baseline: trained to answer with no tool (sft target direct)
RUMINATION_TRAINED = ("drp_sft", "rl_d", "crp_sft", "rl_c")  # trained to call tools, then answer
BEST_VS_DIRECT = "rumination_best_vs_direct_single_pass"  # the headline comparison's key
SPLITS = ("val", "test")  # eval.split: the synthetic held-out split a folder resolves to


@dataclass
class EvalSettings:
    """`eval:` in params.yaml (the eval sets are read by `load_eval_sets`)."""

    checkpoints: list[str] = field(
        default_factory=lambda: ["base", "pretrain", DIRECT, "drp_sft", "rl_d", "crp_sft", "rl_c"]
    )
    max_steps: int = 5  # K: the rumination budget and the end of the scaling curve
    max_new_tokens: int = 96  # per assistant turn
    max_total_tokens: int = 8192
    batch_size: int = 32  # rollouts decoded together
    max_questions: int = -1  # per set; -1 = all
    bf16: str = "auto"
    bootstrap_resamples: int = RESAMPLES  # for the ANLS intervals and the paired comparisons
    vision: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of `vision:` at evaluation (e.g. larger crops)
    sets: dict[str, Any] = field(default_factory=dict)
    # the rumination checkpoint set against direct_sft's single pass; None = the best on the split
    # evaluated (fix one chosen on val here, so the test split does not both choose and judge it)
    best_checkpoint: str | None = None
    # the synthetic split scored when the held-out path is a folder (samples_<split>.jsonl): test is the
    # eval stage's own; trials and sweeps score val (dvc exp run -S eval.split=val)
    split: str = "test"

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"eval.split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.max_steps < 0:
            raise ValueError("eval.max_steps must be >= 0")
        if not self.checkpoints:
            raise ValueError("eval.checkpoints is empty")
        if self.bootstrap_resamples < 1:
            raise ValueError("eval.bootstrap_resamples must be >= 1")
        if self.best_checkpoint is not None and self.best_checkpoint not in RUMINATION_TRAINED:
            raise ValueError(
                f"eval.best_checkpoint {self.best_checkpoint!r} is not one of {', '.join(RUMINATION_TRAINED)}"
            )
        if self.best_checkpoint is not None and self.best_checkpoint not in self.checkpoints:
            raise ValueError(f"eval.best_checkpoint {self.best_checkpoint!r} is not in eval.checkpoints")


@dataclass
class EvalSet:
    name: str  # a key: synthetic, m4_t1s1, mpdocvqa, mvbench, ...
    title: str  # the table's column header
    rows: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)


class EvalDataError(ValueError):
    """An eval set that is configured but cannot be read."""


# ---------------------------------------------------------------- the eval sets
M4_TITLES = {"t1s1": "M4-ViteVQA T1-S1", "t1s2": "M4-ViteVQA T1-S2", "t2": "M4-ViteVQA T2"}


def _root(spec: dict[str, Any], where: str) -> Path | None:
    if not spec or not spec.get("root"):
        return None
    root = Path(spec["root"])
    if not root.is_dir():
        raise EvalDataError(f"eval.sets.{where}.root does not exist: {root}")
    return root


def _with_reference_answers(samples: Sequence[Any], skipped: dict[str, int]) -> list[dict[str, Any]]:
    """Scorable rows: a question without ground truth (a hidden test split) is counted, not scored."""
    rows = [s.to_dict() for s in samples if s.answers]
    if len(rows) < len(samples):
        skipped["no_answers"] = skipped.get("no_answers", 0) + len(samples) - len(rows)
    return rows


def _rooted_pages(samples: Sequence[Any], root: Path) -> Sequence[Any]:
    for s in samples:
        s.video = str(root / s.video)
        if s.meta.get("pages"):
            s.meta["pages"] = [str(root / p) for p in s.meta["pages"]]
    return samples


def held_out_file(path: str | Path, split: str) -> Path:
    """The synthetic samples file to score: `path` itself when it is a file, else the folder's
    samples_<split>.jsonl (split val or test, `eval.split`)."""
    if split not in SPLITS:
        raise ValueError(f"eval.split {split!r} is not one of {', '.join(SPLITS)}")
    path = Path(path)
    samples = path / f"samples_{split}.jsonl" if path.is_dir() else path
    if not samples.is_file():
        raise EvalDataError(f"synthetic samples not found: {samples}")
    return samples


def load_eval_sets(settings: EvalSettings, synthetic: str | Path | None) -> list[EvalSet]:
    """The synthetic held-out split (always, when given: a samples file, or the build folder whose
    samples_<eval.split>.jsonl is read) and every configured set under `eval.sets`."""
    from videor4.core.io import read_jsonl

    sets: list[EvalSet] = []
    if synthetic is not None:
        samples = held_out_file(synthetic, settings.split)
        sets.append(EvalSet("synthetic", "Synthetic", list(read_jsonl(samples))))
    spec = settings.sets or {}
    known = {"m4vitevqa", "mpdocvqa", "slidesvqa", "mcvqa"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise EvalDataError(f"unknown eval.sets: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        sets += _m4vitevqa_sets(spec.get("m4vitevqa") or {})
        sets += _document_sets(spec)
        sets += _multiple_choice_sets(spec.get("mcvqa") or {})
    except KeyError as exc:
        raise EvalDataError(f"eval.sets: missing key {exc}") from exc
    except ValueError as exc:  # a loader's file-level error names the file
        raise EvalDataError(str(exc)) from exc
    for s in sets:
        if settings.max_questions > 0:
            s.rows = s.rows[: settings.max_questions]
        if not s.rows:
            raise EvalDataError(
                f"eval set {s.name} has no scorable questions (skipped: {s.skipped or 'none'})"
            )
    return sets


def _m4vitevqa_sets(m4: dict[str, Any]) -> list[EvalSet]:
    """One set per configured M4-ViteVQA test file (`eval.sets.m4vitevqa.files`)."""
    from videor4.data.sources.m4vitevqa import M4ViteVQAConfig, load_m4vitevqa

    sets = []
    if root := _root(m4, "m4vitevqa"):
        for tag, split_file in (m4.get("files") or {}).items():
            videos_dir = m4.get("videos_dir", "videos")
            cfg = M4ViteVQAConfig(
                root=root, split_file=split_file, videos_dir=videos_dir, ocr_dir=None, split="test"
            )
            samples, skipped = load_m4vitevqa(cfg, check_videos=True, allow_missing_answers=True)
            for s in samples:
                s.video = str(root / s.video)
            title = M4_TITLES.get(tag, f"M4-ViteVQA {tag}")
            sets.append(EvalSet(f"m4_{tag}", title, _with_reference_answers(samples, skipped), skipped))
    return sets


def _document_sets(spec: dict[str, Any]) -> list[EvalSet]:
    """MP-DocVQA and SlidesVQA, each a set when configured: pages as frames."""
    from videor4.data.sources.documents import load_mpdocvqa, load_slidesvqa

    sets = []
    for name, loader, title in (
        ("mpdocvqa", load_mpdocvqa, "MP-DocVQA"),
        ("slidesvqa", load_slidesvqa, "SlidesVQA"),
    ):
        doc = spec.get(name) or {}
        if root := _root(doc, name):
            samples, skipped = loader(root, doc["split_file"], allow_missing_answers=True)
            rows = _with_reference_answers(_rooted_pages(samples, root), skipped)
            sets.append(EvalSet(name, title, rows, skipped))
    return sets


def _multiple_choice_sets(spec: dict[str, Any]) -> list[EvalSet]:
    """One set per configured multiple-choice benchmark (`eval.sets.mcvqa.<name>`)."""
    from videor4.data.sources.mcvqa import load_mcvqa

    sets = []
    for name, mc in spec.items():
        if root := _root(mc, f"mcvqa.{name}"):
            samples, skipped = load_mcvqa(
                root,
                mc["annotation_file"],
                dataset=name,
                videos_dir=mc.get("videos_dir", "videos"),
                video_ext=mc.get("video_ext", ".mp4"),
            )
            sets.append(
                EvalSet(name, mc.get("title", name), _with_reference_answers(samples, skipped), skipped)
            )
    return sets


# ---------------------------------------------------------------- answering
def option_count(row: Mapping[str, Any]) -> int:
    """A multiple-choice question's number of options (4 when its row lists none: the letter scorer's
    default)."""
    return len(row.get("options") or []) or 4


def _record(r: Any) -> dict[str, Any]:
    """A rollout as a per-question prediction: answer, score, tool use, and its trajectory in the
    format synthesis writes (`video-r4 data show/replay ID --file` read it)."""
    s = r.sample
    scores = score_answer(r.answer, s["answers"], s.get("problem_type", "open"), option_count(s))
    return {
        "sample_id": s["sample_id"],
        "question": s["question"],
        "answers": s["answers"],
        "prediction": r.answer,
        **scores,
        "finish_reason": r.finish_reason,
        "calls": len(r.ops),
        "clip_calls": r.calls("clipping"),
        "crop_calls": r.calls("cropping"),
        "invalid_calls": r.invalid_calls,
        "trajectory": r.to_trajectory().to_dict(),
    }


def answer_all(
    model,
    encoder,
    rows: Sequence[dict[str, Any]],
    vision,
    settings: EvalSettings,
    budget: int,
    max_images: int,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Greedy rumination on every row under a budget of `budget` tool calls; one record per row."""
    from videor4.policy.rollout import RolloutEngine, RolloutSettings
    from videor4.rumination.trajectory import sample_env

    engine = RolloutEngine(
        model,
        encoder,
        RolloutSettings(
            max_tool_calls=budget,
            max_images=max_images,
            max_new_tokens=settings.max_new_tokens,
            max_total_tokens=settings.max_total_tokens,
            temperature=0.0,
            batch_size=settings.batch_size,
            force_answer=True,
        ),
    )
    records = []
    # rollouts hold images and caches: a batch at a time
    for start in range(0, len(rows), settings.batch_size):
        chunk = rows[start : start + settings.batch_size]
        rollouts = engine.run(
            [
                engine.start(row, sample_env(row, vision, max_images=max_images), start + i)
                for i, row in enumerate(chunk)
            ]
        )
        records += [_record(r) for r in rollouts]
        if progress:
            progress(len(chunk))
    return records


def sweep_budgets(
    model,
    encoder,
    rows: Sequence[dict[str, Any]],
    vision,
    settings: EvalSettings,
    max_images: int,
    progress: Callable[[int], None] | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """Records under every budget 0..K; a question is decoded again at budget k only if it used more than k
    calls."""
    k_max = settings.max_steps
    runs = {k_max: answer_all(model, encoder, rows, vision, settings, k_max, max_images, progress)}
    for k in range(k_max - 1, -1, -1):
        records = list(runs[k + 1])
        redo = [i for i, rec in enumerate(records) if rec["calls"] > k]
        if redo:
            fresh = answer_all(model, encoder, [rows[i] for i in redo], vision, settings, k, max_images)
            for i, rec in zip(redo, fresh):
                records[i] = rec
        runs[k] = records
    return runs


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def answered(record: Mapping[str, Any]) -> bool:
    """Whether a prediction is a non-empty answer (an unanswered rollout scores 0 without being wrong
    about anything: a format failure, which the answered rate keeps apart from a reading failure)."""
    return bool(str(record.get("prediction") or "").strip())


def scores(records: Sequence[dict[str, Any]], resamples: int = RESAMPLES) -> dict[str, Any]:
    """One Acc / ANLS cell: the means (keys `acc`, `anls` as before), n, their 95 % intervals
    (Wilson for the 0/1 accuracy, a bootstrap for the graded ANLS, see `mean_ci`), and the answered
    rate (share of the n predictions that are non-empty answers)."""
    acc = proportion_ci([r["acc"] for r in records])
    anls = mean_ci([r["anls"] for r in records], resamples)
    return {
        "acc": acc.value,
        "acc_ci": acc.ci,
        "anls": anls.value,
        "anls_ci": anls.ci,
        "n": acc.n,
        "answered": _mean([float(answered(r)) for r in records]),
    }


def question_kinds(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """{sample_id: question_kind} for the rows that carry a kind."""
    return {row["sample_id"]: str(row["question_kind"]) for row in rows if row.get("question_kind")}


def question_formats(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """{sample_id: problem_type} (multiple_choice | open) for every row."""
    return {row["sample_id"]: str(row.get("problem_type") or "open") for row in rows}


def chance_multiple_choice(rows: Sequence[dict[str, Any]]) -> float | None:
    """The accuracy of guessing on the multiple-choice questions: the mean of 1 / options over them
    (None when there are none)."""
    chances = [1 / option_count(row) for row in rows if row.get("problem_type") == "multiple_choice"]
    return _mean(chances) if chances else None


def by_kind(
    runs: dict[int, list[dict[str, Any]]], kinds: Mapping[str, str], resamples: int = RESAMPLES
) -> dict[str, Any]:
    """{kind: {single_pass: cell, rumination: cell}}: a mean over mixed kinds can hide that one kind carries
    it.  `kinds` maps sample id to any grouping (question kind, or problem type for `by_format`)."""
    out: dict[str, Any] = {}
    for kind in sorted(set(kinds.values())):
        out[kind] = {
            mode: scores([r for r in runs[k] if kinds.get(r["sample_id"]) == kind], resamples)
            for mode, k in ((SINGLE_PASS, 0), (RUMINATION, max(runs)))
        }
    return out


def summarize(
    runs: dict[int, list[dict[str, Any]]], rows: Sequence[dict[str, Any]] = (), resamples: int = RESAMPLES
) -> dict[str, Any]:
    """Acc / ANLS (with n, 95 % intervals and the answered rate) of single pass (budget 0) and
    rumination (budget K), the curve with its band, tool use under K, and, given `rows`, the same by
    problem type (`by_format`) and by question kind when the rows carry one."""
    k_max = max(runs)
    top = runs[k_max]
    calls = sum(r["calls"] for r in top)
    kinds = question_kinds(rows)

    summary = {
        SINGLE_PASS: scores(runs[0], resamples),
        RUMINATION: scores(top, resamples),
        "scaling": [{"steps": k, **scores(runs[k], resamples)} for k in sorted(runs)],
        "tools": {
            "clip_per_question": _mean([r["clip_calls"] for r in top]),
            "crop_per_question": _mean([r["crop_calls"] for r in top]),
            "questions_using_tools": _mean([float(r["calls"] > 0) for r in top]),
            "invalid_call_rate": sum(r["invalid_calls"] for r in top) / calls if calls else 0.0,
            "answered": _mean([float(r["finish_reason"] == "answer") for r in top]),
        },
        "questions": len(top),
    }
    if kinds:
        summary["by_kind"] = by_kind(runs, kinds, resamples)
    if rows:  # multiple choice and open apart: letter guessing has a floor that open answers lack
        summary["by_format"] = by_kind(runs, question_formats(rows), resamples)
    return summary


@dataclass
class CheckpointResult:
    name: str
    summaries: dict[str, dict[str, Any]]  # per eval set
    predictions: dict[str, dict[str, list[dict[str, Any]]]]  # set → mode → records
    seconds: float


def _load(path: str | Path, settings: EvalSettings):
    import torch

    from videor4.policy.encoding import PolicyEncoder
    from videor4.policy.model import load_policy
    from videor4.train.lifecycle import use_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(path, dtype="bfloat16" if use_bf16(settings.bf16) else "float32", device=device)
    return policy.model, PolicyEncoder(policy.tokenizer, policy.image_processor)


def evaluate_checkpoint(
    name: str,
    path: str | Path,
    sets: Sequence[EvalSet],
    vision,
    settings: EvalSettings,
    max_images: int,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> CheckpointResult:
    started = time.time()
    model, encoder = _load(path, settings)
    summaries, predictions = {}, {}
    for s in sets:
        bar = progress(f"eval {name} · {s.name}", len(s.rows)) if progress else None
        runs = sweep_budgets(model, encoder, s.rows, vision, settings, max_images, bar)
        summaries[s.name] = summarize(runs, s.rows, settings.bootstrap_resamples)
        predictions[s.name] = {SINGLE_PASS: runs[0], RUMINATION: runs[settings.max_steps]}
    return CheckpointResult(name, summaries, predictions, time.time() - started)


def evaluate_mode(
    path: str | Path,
    s: EvalSet,
    mode: str,
    vision,
    settings: EvalSettings,
    max_images: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One mode on one set, without the budget sweep: (its Acc / ANLS cell, the records)."""
    if mode not in MODE_LABELS:
        raise ValueError(f"unknown mode {mode!r} (single_pass or rumination)")
    model, encoder = _load(path, settings)
    budget = 0 if mode == SINGLE_PASS else settings.max_steps
    records = answer_all(model, encoder, s.rows, vision, settings, budget, max_images, progress)
    return scores(records, settings.bootstrap_resamples), records


SET_NAMES = ("synthetic", "m4vitevqa", "mpdocvqa", "slidesvqa", "mcvqa")


def eval_set_from_root(
    name: str, root: str | Path, settings: EvalSettings, file: str | None = None, subset: str | None = None
) -> list[EvalSet]:
    """The eval set(s) `name` read from `root`, as `eval.sets` would configure them (its file names from
    params unless `file` is given): synthetic takes a samples file or a folder holding
    samples_<eval.split>.jsonl (samples_test.jsonl by default); m4vitevqa gives one set per configured
    split (or just `file`); mcvqa reads `subset` (default mvbench)."""
    if name not in SET_NAMES:
        raise EvalDataError(f"unknown eval set {name!r} (one of {', '.join(SET_NAMES)})")
    root = Path(root)
    if not root.exists():
        raise EvalDataError(f"{name} root not found: {root}")
    if name == "synthetic":
        picked = dataclasses.replace(settings, sets={})
        return load_eval_sets(picked, held_out_file(root, settings.split))
    configured = dict((settings.sets or {}).get(name) or {})
    if name == "mcvqa":
        subset = subset or "mvbench"
        spec = {
            "annotation_file": f"{subset}.json",
            "videos_dir": "videos",
            **(configured.get(subset) or {}),
            "root": str(root),
        }
        if file:
            spec["annotation_file"] = file
        picked_sets = {"mcvqa": {subset: spec}}
    else:
        spec = {**DEFAULT_SETS.get(name, {}), **configured, "root": str(root)}
        if file and name == "m4vitevqa":
            spec["files"] = {Path(file).stem: file}
        elif file:
            spec["split_file"] = file
        picked_sets = {name: spec}
    return load_eval_sets(dataclasses.replace(settings, sets=picked_sets), None)


# the file names `eval.sets` uses when params.yaml has none (the datasets' own)
DEFAULT_SETS = {
    "m4vitevqa": {
        "videos_dir": "videos",
        "files": {
            "t1s1": "ViteVQA_0.0.2_t1s1test.json",
            "t1s2": "ViteVQA_0.0.2_t1s2test.json",
            "t2": "ViteVQA_0.0.2_t2test.json",
        },
    },
    "mpdocvqa": {"split_file": "val.json"},
    "slidesvqa": {"split_file": "test.jsonl"},
}


# ---------------------------------------------------------------- paired comparisons
def curriculum_inits(params: Mapping[str, Any]) -> dict[str, str]:
    """{checkpoint: the checkpoint it was trained from}, as the `--init` flags in dvc.yaml.

    CRP-SFT starts from `curriculum.crp_sft_init` (models/rl_d, or models/drp_sft / models/pretrain in
    the schedule ablations), so each stage is compared against the start it really had.
    """
    crp_init = curriculum_params(params).crp_sft_init
    return {
        "pretrain": "base",
        DIRECT: "pretrain",
        "drp_sft": "pretrain",
        "rl_d": "drp_sft",
        "crp_sft": Path(crp_init).name,
        "rl_c": "crp_sft",
    }


def _paired(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], resamples: int) -> dict[str, Any]:
    """a - b on Acc and ANLS, question by question (alignment checked by sample id)."""
    ids_a, ids_b = [r["sample_id"] for r in a], [r["sample_id"] for r in b]
    return {
        metric: paired_difference(
            [r[metric] for r in a], [r[metric] for r in b], ids_a, ids_b, resamples
        ).to_dict()
        for metric in ("acc", "anls")
    }


CHOSEN_ON_VAL = "best rumination Acc on val"  # how eval picks the headline checkpoint when it scores test
CHOSEN_ON_SPLIT = "best rumination Acc on this split"  # with no val split to choose on


def best_vs_direct(
    results: Sequence[CheckpointResult],
    set_name: str,
    resamples: int = RESAMPLES,
    best: str | None = None,
    chosen_by: str = "eval.best_checkpoint",
) -> dict[str, Any] | None:
    """The headline pair: rumination at the best rumination-trained checkpoint - direct_sft's single
    pass, question by question.  That a trained single pass is the baseline keeps "rumination beats
    single pass" from restating that a tool-trained checkpoint leaves its tool-less answers empty.

    `best` fixes the checkpoint (eval.best_checkpoint, or the choice made on val: `chosen_by` says
    which); None picks the best rumination Acc on this same set, which favours rumination (the set
    both chooses and judges).  None when direct_sft or
    every candidate was not evaluated.  {best, chosen_by, acc, anls}, each metric a paired leaf."""
    by_name = {r.name: r for r in results}
    candidates = [r for r in results if r.name in RUMINATION_TRAINED and best in (None, r.name)]
    if DIRECT not in by_name or not candidates:
        return None
    top = max(candidates, key=lambda r: r.summaries[set_name][RUMINATION]["acc"])  # ties: the earliest
    rumination = top.predictions[set_name][RUMINATION]
    single = by_name[DIRECT].predictions[set_name][SINGLE_PASS]
    chosen_by = chosen_by if best is not None else CHOSEN_ON_SPLIT
    return {"best": top.name, "chosen_by": chosen_by, **_paired(rumination, single, resamples)}


def paired_comparisons(
    results: Sequence[CheckpointResult],
    sets: Sequence[EvalSet],
    inits: Mapping[str, str],
    resamples: int = RESAMPLES,
    best: str | None = None,
    chosen_by: str = "eval.best_checkpoint",
) -> dict[str, Any]:
    """Per eval set: the best rumination checkpoint - direct_sft's single pass (`best_vs_direct`),
    rumination - single pass for every checkpoint, and every stage - its init (`inits`, e.g.
    `curriculum_inits`) in both modes, each paired on the same questions.

    {set: {"rumination_best_vs_direct_single_pass": {best, chosen_by, acc, anls},
           "rumination_vs_single_pass": {ckpt: {acc, anls}},
           "stage_vs_init": {"<stage>_vs_<init>": {single_pass: {acc, anls}, rumination: {acc, anls}}}}},
    each leaf {diff, ci, p, n, significant}.  A pair whose stage or init was not evaluated is skipped.
    """
    by_name = {r.name: r for r in results}
    out: dict[str, Any] = {}
    for s in sets:
        modes = {r.name: r.predictions[s.name] for r in results}
        headline = best_vs_direct(results, s.name, resamples, best, chosen_by)
        out[s.name] = {BEST_VS_DIRECT: headline} if headline is not None else {}
        out[s.name] |= {
            "rumination_vs_single_pass": {
                name: _paired(m[RUMINATION], m[SINGLE_PASS], resamples) for name, m in modes.items()
            },
            "stage_vs_init": {
                f"{r.name}_vs_{inits[r.name]}": {
                    mode: _paired(modes[r.name][mode], modes[inits[r.name]][mode], resamples)
                    for mode in (SINGLE_PASS, RUMINATION)
                }
                for r in results
                if r.name in inits and inits[r.name] in by_name
            },
        }
    return out


# ---------------------------------------------------------------- reports
def eval_metrics(
    results: Sequence[CheckpointResult],
    sets: Sequence[EvalSet],
    max_steps: int,
    comparisons: Mapping[str, Any] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """metrics/eval.json: the synthetic split scored (`split`: val or test, `eval.split`); per set and
    checkpoint, both modes' Acc/ANLS (n, 95 % intervals, answered rate), the scaling curve with its
    band, the per-kind and per-format breakdowns and tool use; each set's chance accuracy on
    multiple choice; the paired comparisons."""
    metrics: dict[str, Any] = {"split": split}
    keys = (SINGLE_PASS, RUMINATION, "scaling", "by_kind", "by_format", "tools")
    for s in sets:
        metrics[s.name] = {
            r.name: {k: r.summaries[s.name][k] for k in keys if k in r.summaries[s.name]} for r in results
        }
    metrics["questions"] = {s.name: len(s.rows) for s in sets}
    metrics["skipped"] = {s.name: sum(s.skipped.values()) for s in sets}
    metrics["chance_multiple_choice"] = {s.name: chance_multiple_choice(s.rows) for s in sets}
    metrics["max_steps"] = max_steps
    if comparisons is not None:
        metrics["comparisons"] = dict(comparisons)
    return metrics


def headline_metrics(
    results: Sequence[CheckpointResult],
    sets: Sequence[EvalSet],
    comparisons: Mapping[str, Any] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """What people compare across experiments: the synthetic split scored (`split`, so that `dvc exp
    show` tells val runs from test runs), Acc and ANLS per set, checkpoint and mode, and (given the
    comparisons) the best rumination checkpoint against direct_sft's single pass per set (the
    intervals, kinds and other comparisons stay in the full eval metrics)."""
    headline: dict[str, Any] = {"split": split}
    headline |= {
        s.name: {
            r.name: {mode: {m: r.summaries[s.name][mode][m] for m in ("acc", "anls")} for mode in MODE_LABELS}
            for r in results
        }
        for s in sets
    }
    pairs = {
        s.name: comparisons[s.name][BEST_VS_DIRECT]
        for s in sets
        if BEST_VS_DIRECT in (comparisons or {}).get(s.name, {})
    }
    if pairs:
        headline[BEST_VS_DIRECT] = pairs
    return headline


def tracked_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """A metrics tree's numbers as dotted keys for MLflow, each interval `[lo, hi]` (a key `ci` or
    `*_ci`) as `<key>_low` / `<key>_high`: MLflow takes scalars only and would drop the lists.
    Other lists (the scaling curve, logged per step instead) and flags are left out."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(tracked_numbers(value, name))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)):
            out[name] = float(value)
        elif (
            (key == "ci" or str(key).endswith("_ci")) and isinstance(value, (list, tuple)) and len(value) == 2
        ):
            out[f"{name}_low"], out[f"{name}_high"] = float(value[0]), float(value[1])
    return out


def scaling_rows(
    results: Sequence[CheckpointResult], set_name: str, key: str = "acc"
) -> list[dict[str, Any]]:
    """[{steps: k, <checkpoint>: score}, ...] for a plot with one line per checkpoint."""
    by_steps: dict[int, dict[str, Any]] = {}
    for r in results:
        for point in r.summaries[set_name]["scaling"]:
            by_steps.setdefault(point["steps"], {"steps": point["steps"]})[r.name] = point[key]
    return [by_steps[k] for k in sorted(by_steps)]


def accuracy_rows(results: Sequence[CheckpointResult], set_name: str) -> list[dict[str, Any]]:
    """One bar per checkpoint and mode: [{run: "rl_c · rumination", acc, anls, n, acc_low, ...}, ...]
    (scalars only: the plot's rows)."""
    rows = []
    for r in results:
        for mode in (SINGLE_PASS, RUMINATION):
            c = r.summaries[set_name][mode]
            rows.append(
                {
                    "run": f"{r.name} · {mode.replace('_', '-')}",
                    "acc": c["acc"],
                    "anls": c["anls"],
                    "n": c["n"],
                    "acc_low": c["acc_ci"][0],
                    "acc_high": c["acc_ci"][1],
                    "anls_low": c["anls_ci"][0],
                    "anls_high": c["anls_ci"][1],
                }
            )
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _cell(cell: Mapping[str, Any], metric: str = "acc") -> str:
    """ "57.3 [48.1, 66.0] · ans 98 %": the mean and its 95 % interval in %, and on Acc the answered
    rate (an empty prediction scores 0 on both metrics); n is in the column header."""
    text = format_estimate(Estimate(cell[metric], *cell[f"{metric}_ci"], cell["n"]), with_n=False)
    if metric == "acc" and "answered" in cell:
        text += f" · ans {100 * cell['answered']:.0f} %"
    return text


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


MODE_LABELS = {SINGLE_PASS: "single-pass", RUMINATION: "rumination"}


def _best_vs_direct_note(pairs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the headline rows compare and how their checkpoint was picked (none without them)."""
    if not pairs:
        return []
    chosen = {p["chosen_by"] for p in pairs}
    if chosen == {"eval.best_checkpoint"}:
        how = "fixed by eval.best_checkpoint"
    elif chosen == {CHOSEN_ON_VAL}:
        how = "the one with the best rumination Acc on the val split, chosen before this split was scored"
    else:
        how = (
            "the best rumination Acc, chosen on this same split (which favours rumination; pass a "
            "choice made on val as eval.best_checkpoint)"
        )
    return [
        f'"(best) - {DIRECT}": rumination at the best of {", ".join(RUMINATION_TRAINED)} against '
        f"{DIRECT}'s single pass (trained to answer without tools); the checkpoint is {how}.",
        "",
    ]


def comparison_table(comparisons: Mapping[str, Any], sets: Sequence[EvalSet]) -> list[str]:
    """The "Paired comparisons" section: one row per pair, mode and metric; the best rumination
    checkpoint against direct_sft's single pass first."""
    best = [(s, pair) for s in sets if (pair := (comparisons.get(s.name) or {}).get(BEST_VS_DIRECT))]
    lines = ["## Paired comparisons (same questions; A - B in points)", ""]
    lines += _best_vs_direct_note([pair for _, pair in best])
    lines += [
        "| Set | Pair | Mode | Metric | Difference | 95 % CI | p | significant |",
        "|---|---|---|---|---:|---|---:|---|",
    ]

    def row(title, pair, mode, stats):
        for metric, label in (("acc", "Acc"), ("anls", "ANLS")):
            d = stats[metric]
            lines.append(
                f"| {title} | {pair} | {mode} | {label} | {_points(d['diff'])} | [{_points(d['ci'][0])}, "
                f"{_points(d['ci'][1])}] | "
                f"{format_p(d['p'])} | {'yes' if d['significant'] else 'no'} |"
            )

    for s, pair in best:
        row(s.title, f"{pair['best']} (best) - {DIRECT}", "rumination - single-pass", pair)
    for s in sets:
        c = comparisons.get(s.name) or {}
        for name, stats in (c.get("rumination_vs_single_pass") or {}).items():
            row(s.title, name, "rumination - single-pass", stats)
        for pair, by_mode in (c.get("stage_vs_init") or {}).items():
            for mode in (SINGLE_PASS, RUMINATION):
                row(s.title, pair.replace("_vs_", " - "), MODE_LABELS[mode], by_mode[mode])
    return lines + [""]


def kind_table(results: Sequence[CheckpointResult], s: EvalSet, key: str = "by_kind") -> list[str]:
    """Accuracy by question kind (`key` by_kind) or problem type (by_format) for one set (nothing when
    its rows carry fewer than two: the breakdown would repeat the main table)."""
    kinds = results[0].summaries[s.name].get(key) or {} if results else {}
    if len(kinds) < 2:
        return []
    lines = [
        f"**{s.title}**",
        "",
        "| Checkpoint | Mode | "
        + " | ".join(f"{k} (n={v[SINGLE_PASS]['n']})" for k, v in kinds.items())
        + " |",
        "|---|---|" + "---:|" * len(kinds),
    ]
    for r in results:
        for mode, label in MODE_LABELS.items():
            cells = " | ".join(_cell(r.summaries[s.name][key][k][mode]) for k in kinds)
            lines.append(f"| {r.name} | {label} | {cells} |")
    return lines + [""]


def paper_table(
    results: Sequence[CheckpointResult],
    sets: Sequence[EvalSet],
    max_steps: int,
    title: str = "Video-R4 evaluation",
    notes: Sequence[str] = (),
    comparisons: Mapping[str, Any] | None = None,
) -> str:
    """Markdown laid out like the paper's tables: rows are checkpoints × modes, columns sets × Acc/ANLS,
    each cell the mean [95 % CI] in %; then the scaling curve, accuracy by question kind, the paired
    comparisons (when given) and tool use."""
    lines = [f"# {title}", ""]
    lines += _table_notes(sets, max_steps, notes)
    lines += _accuracy_rows(results, sets)
    lines += ["", "## Test-time scaling: accuracy (%) [95 % CI] by allowed rumination steps", ""]
    lines += _scaling_rows(results, sets, max_steps)
    by_kind = [line for s in sets for line in kind_table(results, s)]
    if by_kind:
        lines += ["## Accuracy (%) [95 % CI] by question kind", "", *by_kind]
    by_format = [line for s in sets for line in kind_table(results, s, "by_format")]
    if by_format:
        lines += ["## Accuracy (%) [95 % CI] by problem type", "", *by_format]
    if comparisons:
        lines += comparison_table(comparisons, sets)
    lines += _tool_use_rows(results, sets)
    return "\n".join(lines) + "\n"


def _table_notes(sets: Sequence[EvalSet], max_steps: int, notes: Sequence[str]) -> list[str]:
    """The table's preamble: the caller's notes, each set's size, what the modes and cells are."""
    lines = [f"- {n}" for n in notes]
    lines += [
        f"- {s.title}: {len(s.rows)} questions"
        + (f" ({sum(s.skipped.values())} skipped)" if s.skipped else "")
        for s in sets
    ]
    for s in sets:  # the floor a letter guess reaches, which open answers lack
        multiple_choice = [row for row in s.rows if row.get("problem_type") == "multiple_choice"]
        if multiple_choice:
            lines.append(
                f"- {s.title}: chance on its {len(multiple_choice)} multiple-choice questions (1 / options, "
                f"mean) {100 * chance_multiple_choice(multiple_choice):.1f} %"
            )
    lines += [
        f"- single-pass: no tools, answers from the low-resolution frames; rumination: up to {max_steps} "
        f"clip/crop calls, greedy; {DIRECT}: trained on the same questions to answer with no tool call"
    ]
    lines += [
        "- cells: mean [95 % CI] in %; Acc: Wilson interval, ANLS: percentile bootstrap (Wilson when all "
        "0/1); ans: share of predictions that are a non-empty answer; paired comparisons: "
        "bootstrap CI of the per-question difference, sign-flip permutation p, significant at p < 0.05",
        "",
    ]
    return lines


def _accuracy_rows(results: Sequence[CheckpointResult], sets: Sequence[EvalSet]) -> list[str]:
    """Checkpoints × modes against sets × Acc / ANLS."""
    header = (
        "| Checkpoint | Mode | "
        + " | ".join(f"{s.title} Acc (n={len(s.rows)}) | {s.title} ANLS (n={len(s.rows)})" for s in sets)
        + " |"
    )
    lines = [header, "|---|---|" + "---:|" * (2 * len(sets))]
    for r in results:
        for mode, label in MODE_LABELS.items():
            cells = " | ".join(
                f"{_cell(r.summaries[s.name][mode], 'acc')} | {_cell(r.summaries[s.name][mode], 'anls')}"
                for s in sets
            )
            lines.append(f"| {r.name} | {label} | {cells} |")
    return lines


def _scaling_rows(results: Sequence[CheckpointResult], sets: Sequence[EvalSet], max_steps: int) -> list[str]:
    """Per set: accuracy of each checkpoint at every allowed number of rumination steps."""
    lines = []
    for s in sets:
        lines += [
            f"**{s.title}** (n={len(s.rows)})",
            "",
            "| Checkpoint | " + " | ".join(str(k) for k in range(max_steps + 1)) + " |",
            "|---|" + "---:|" * (max_steps + 1),
        ]
        for r in results:
            lines.append(
                f"| {r.name} | " + " | ".join(_cell(p) for p in r.summaries[s.name]["scaling"]) + " |"
            )
        lines.append("")
    return lines


def _tool_use_rows(results: Sequence[CheckpointResult], sets: Sequence[EvalSet]) -> list[str]:
    """Clip and crop calls per question, questions that used a tool, invalid calls, answered."""
    lines = ["## Tool use under rumination (per question)", ""]
    lines += [
        "| Checkpoint | Set | clipping | cropping | used a tool | invalid calls | answered |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in sets:
            t = r.summaries[s.name]["tools"]
            lines.append(
                f"| {r.name} | {s.title} | {t['clip_per_question']:.2f} | {t['crop_per_question']:.2f} | "
                f"{_pct(t['questions_using_tools'])}% | {_pct(t['invalid_call_rate'])}% | "
                f"{_pct(t['answered'])}% |"
            )
    return lines


def format_cell_table(name: str, mode: str, cells: Sequence[tuple[EvalSet, Mapping[str, Any]]]) -> str:
    """One checkpoint in one mode: a row per set with Acc and ANLS, mean [95 % CI] in %."""
    lines = [f"# {name}: {MODE_LABELS[mode]}", "", "| Set | n | Acc | ANLS |", "|---|---:|---:|---:|"]
    lines += [
        f"| {s.title} | {cell['n']} | {_cell(cell, 'acc')} | {_cell(cell, 'anls')} |" for s, cell in cells
    ]
    return "\n".join(lines) + "\n"


def eval_settings(params: dict[str, Any]) -> EvalSettings:
    """`eval:` (checkpoints, the budget sweep, the optional eval sets)."""
    settings = fill(EvalSettings, section(params, "eval"), "eval")
    settings.validate()
    return settings
