"""The work of stage eval (stages/eval.py): every checkpoint of the curriculum on every eval set
that is present, the paper-style table and the output files.

The stage keeps what is not evaluation: the parameters file, the MLflow run (its lineage tags
and metrics) and the one-line errors.  `evaluate` is used through its module, so that what it
holds at call time is what runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from videor4.core.io import atomic_dir, atomic_write_text, write_json, write_jsonl
from videor4.evaluation import evaluate
from videor4.evaluation.evaluate import CheckpointResult, EvalSet, EvalSettings
from videor4.evaluation.figures import FIGURES
from videor4.policy.rollout import rollout_limits
from videor4.rumination.tools import VisionConfig, vision_config


@dataclass
class EvalPlan:
    """What stage eval evaluates, from params: the settings, each checkpoint's folder and the
    checkpoint it was trained from, the vision config and image budget, and the eval sets."""

    settings: EvalSettings
    inits: dict[str, str]  # checkpoint -> the checkpoint it was trained from (curriculum_inits)
    vision: VisionConfig
    max_images: int
    sets: list[EvalSet]
    checkpoints: dict[str, Path]  # name -> folder, in `eval.checkpoints` order
    # the val split, when eval scores test and no eval.best_checkpoint is set: it picks the headline's
    # rumination checkpoint before test is scored, so that test does not both choose and judge
    choice_set: EvalSet | None = None

    def missing(self) -> list[str]:
        """The checkpoint folders that do not exist."""
        return [str(p) for p in self.checkpoints.values() if not p.is_dir()]


def eval_plan(params: dict[str, Any], models: Path, held_out: str | Path | None) -> EvalPlan:
    """The plan from params (`eval:`, `curriculum:`, `vision:`, `rollout:`), checkpoints under `models`
    and the synthetic held-out split: `held_out` a samples file, or the build folder (data/built) whose
    samples_<eval.split>.jsonl is read (test, or val for trials and sweeps); raises EvalDataError /
    ValueError / OSError on bad input."""
    settings = evaluate.eval_settings(params)  # checks eval.split before any path is built from it
    inits = evaluate.curriculum_inits(params)
    vision = vision_config(params, settings.vision)
    max_images = rollout_limits(params).max_images
    sets = evaluate.load_eval_sets(settings, held_out)
    checkpoints = {name: models / name for name in settings.checkpoints}
    choice_set = None
    if settings.split == "test" and settings.best_checkpoint is None and held_out is not None:
        val = Path(held_out) / "samples_val.jsonl"
        if Path(held_out).is_dir() and val.is_file():
            (choice_set,) = evaluate.load_eval_sets(replace(settings, sets={}), val)
    return EvalPlan(settings, inits, vision, max_images, sets, checkpoints, choice_set)


@dataclass
class BestChoice:
    """The headline's rumination checkpoint and how it was picked; `val` holds each candidate's
    rumination Acc / ANLS cell on the val split when it was picked there."""

    best: str | None
    chosen_by: str
    val: dict[str, dict[str, Any]]


def choose_best(
    plan: EvalPlan, progress: Callable[[str, int], Callable[[int], None]] | None = None
) -> BestChoice:
    """eval.best_checkpoint when set; else, when the plan has the val split, the rumination-trained
    checkpoint with the best rumination Acc there (ties: the earliest); else none (the scored split's
    best)."""
    settings = plan.settings
    if settings.best_checkpoint is not None:
        return BestChoice(settings.best_checkpoint, "eval.best_checkpoint", {})
    if plan.choice_set is None:
        return BestChoice(None, evaluate.CHOSEN_ON_SPLIT, {})
    val, cells = plan.choice_set, {}
    for name, path in plan.checkpoints.items():
        if name not in evaluate.RUMINATION_TRAINED:
            continue
        bar = progress(f"choose on val · {name}", len(val.rows)) if progress else None
        cells[name], _ = evaluate.evaluate_mode(
            path, val, evaluate.RUMINATION, plan.vision, settings, plan.max_images, bar
        )
    if not cells:
        return BestChoice(None, evaluate.CHOSEN_ON_SPLIT, {})
    best = max(cells, key=lambda name: cells[name]["acc"])
    return BestChoice(best, evaluate.CHOSEN_ON_VAL, cells)


def evaluate_all(
    plan: EvalPlan,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    on_result: Callable[[CheckpointResult], None] | None = None,
) -> list[CheckpointResult]:
    """Each checkpoint in single-pass and rumination mode on every set, in order; `on_result`
    gets each result as soon as it is done."""
    results = []
    for name, path in plan.checkpoints.items():
        settings, max_images = plan.settings, plan.max_images
        result = evaluate.evaluate_checkpoint(
            name, path, plan.sets, plan.vision, settings, max_images, progress
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def scaling_bands(
    result: CheckpointResult, sets: Sequence[EvalSet]
) -> Iterator[tuple[dict[str, float], int]]:
    """(metrics, step) for each point of the checkpoint's scaling curve on each set: Acc and ANLS
    with their 95 % band, named `scaling/<set>/<checkpoint>/<score>[_low|_high]`, at its step budget."""
    for s in sets:
        for point in result.summaries[s.name]["scaling"]:
            prefix, scores = f"scaling/{s.name}/{result.name}", ("acc", "anls")
            band = {f"{prefix}/{m}": point[m] for m in scores}
            ends = list(enumerate(("low", "high")))
            band |= {f"{prefix}/{m}_{end}": point[f"{m}_ci"][i] for m in scores for i, end in ends}
            yield band, point["steps"]


def compare(results: Sequence[CheckpointResult], plan: EvalPlan, choice: BestChoice) -> dict[str, Any]:
    """The paired comparisons: the best rumination checkpoint (`choice`) vs direct_sft's single pass,
    rumination vs single pass per checkpoint, each stage vs its init."""
    resamples = plan.settings.bootstrap_resamples
    return evaluate.paired_comparisons(
        results, plan.sets, plan.inits, resamples, choice.best, choice.chosen_by
    )


def eval_table(
    results: Sequence[CheckpointResult],
    plan: EvalPlan,
    comparisons: Mapping[str, Any],
    md5s: Mapping[str, str],
) -> str:
    """The paper-style Markdown table, titled with the synthetic split it scored (`eval.split`),
    noting each checkpoint's md5 (`md5s`, by name) and linking the figures stage's PNGs."""
    split = plan.settings.split
    notes = [split_note(split)]
    notes.append("checkpoints: " + ", ".join(f"{n} ({md5s[n][:8]})" for n in plan.checkpoints))
    figures = ", ".join(f"[{what}](figures/{name})" for name, what in FIGURES.items())
    notes.append("figures (stage figures): " + figures)
    max_steps = plan.settings.max_steps
    title = f"Video-R4 evaluation: {split} split"
    return evaluate.paper_table(
        results, plan.sets, max_steps, title=title, notes=notes, comparisons=comparisons
    )


def split_note(split: str) -> str:
    """The table's first note: which synthetic split was scored, and what it is for."""
    if split == "val":
        return (
            "split: val (samples_val.jsonl; eval.split=val, as trials and sweeps run it): for choosing "
            "between settings, not the final numbers"
        )
    return "split: test (samples_test.jsonl; eval.split=test): the final numbers, not for choosing settings"


def write_eval_outputs(
    results: Sequence[CheckpointResult],
    plan: EvalPlan,
    table: str,
    predictions: Path,
    table_path: Path,
    scaling_path: Path,
    accuracy_path: Path,
) -> None:
    """The per-question predictions (one file per checkpoint, set and mode, swapped in atomically),
    the table, and the first set's scaling curve and accuracy bars."""
    with atomic_dir(predictions) as out:
        for r in results:
            for set_name, modes in r.predictions.items():
                for mode, records in modes.items():
                    write_jsonl(out / f"{r.name}.{set_name}.{mode}.jsonl", records)
    atomic_write_text(table_path, table)
    primary = plan.sets[0].name
    write_json(scaling_path, evaluate.scaling_rows(results, primary))
    write_json(accuracy_path, evaluate.accuracy_rows(results, primary))


def eval_summaries(
    results: Sequence[CheckpointResult],
    plan: EvalPlan,
    comparisons: Mapping[str, Any],
    choice: BestChoice | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the headline metrics: the split, Acc and ANLS per set, checkpoint and mode, and the best
    rumination checkpoint vs direct_sft's single pass; the full metrics, the split first, with how
    the best checkpoint was chosen)."""
    split, max_steps = plan.settings.split, plan.settings.max_steps
    headline = evaluate.headline_metrics(results, plan.sets, comparisons, split)
    metrics = evaluate.eval_metrics(results, plan.sets, max_steps, comparisons, split)
    if choice is not None:
        metrics["best_checkpoint_choice"] = {
            "best": choice.best,
            "chosen_by": choice.chosen_by,
            "val_rumination": choice.val,
        }
    return headline, metrics
