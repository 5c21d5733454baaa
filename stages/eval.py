"""Stage eval: every checkpoint of the curriculum on every eval set that is present.

    python stages/eval.py --models models --held-out data/built \
        --predictions reports/eval --table reports/eval_table.md --headline metrics/headline.json \
        --metrics metrics/eval.json --scaling metrics/eval_scaling.json --accuracy metrics/eval_accuracy.json

`--held-out` is the build folder: its samples_<eval.split>.jsonl is scored, samples_test.jsonl by
default (the final numbers) and samples_val.jsonl with `eval.split: val`, as trials and sweeps run
it (`dvc exp run -S eval.split=val`); a samples file given instead is scored as it is.  The split
is named in the metrics ("split"), the table's title and the MLflow tag eval.split.
Single pass vs rumination per checkpoint (`eval.checkpoints`, folders under `--models`),
the test-time scaling curve (accuracy as the allowed rumination steps grow from 0 to
`eval.max_steps`) and tool use, with `videor4.evaluation`; every number with its n and
95 % interval, and paired comparisons: rumination vs single pass per checkpoint, and each
stage vs the checkpoint it was trained from (`curriculum.crp_sft_init` for CRP-SFT).
Scoring test with no `eval.best_checkpoint`, it first picks the headline's rumination checkpoint
on the val split (samples_val.jsonl beside the test file), so that test does not choose.
Writes the headline metrics (Acc / ANLS per checkpoint and mode: what `dvc exp show` leads
with), the full metrics, the two plots, the paper-style table (linking the figures stage's PNGs)
and the per-question predictions with their trajectories.
The MLflow run carries each checkpoint's md5 and the run that trained it.
"""

from __future__ import annotations

import sys
import time

from videor4.pipeline.runner import (
    declared_dep_md5,
    fail,
    one_line_errors,
    progress_bar,
    stage_inputs,
    stage_run,
    write_metrics,
)

STAGE = "eval"


def main() -> None:
    args, params = stage_inputs(
        __doc__, "models", "held-out", "predictions", "table", "headline", "metrics", "scaling", "accuracy"
    )
    from videor4.core.io import write_json
    from videor4.evaluation import stage as evaluation
    from videor4.evaluation.evaluate import EvalDataError, tracked_numbers
    from videor4.policy.model import ModelLoadError
    from videor4.rumination.video import VideoError

    started = time.time()
    with one_line_errors(STAGE, EvalDataError, ValueError, OSError):
        plan = evaluation.eval_plan(params, args.models, args.held_out)
    missing = plan.missing()
    if missing:
        fail(STAGE, f"checkpoint not found: {', '.join(missing)} (run the training stages first: dvc repro)")

    with stage_run(STAGE, params) as run:
        lineage = checkpoint_lineage(run, plan.checkpoints)
        sets = ",".join(s.name for s in plan.sets)
        run.set_tags(lineage | {"eval.sets": sets, "eval.split": plan.settings.split})

        def finished(result) -> None:
            for band, step in evaluation.scaling_bands(result, plan.sets):
                run.log_metrics(band, step=step)
            print(f"eval: {result.name} done in {result.seconds:.0f} s", file=sys.stderr)

        with one_line_errors(STAGE, ModelLoadError, VideoError, ValueError):
            choice = evaluation.choose_best(plan, progress_bar)  # on val, before test is scored
            results = evaluation.evaluate_all(plan, progress_bar, on_result=finished)
        with one_line_errors(STAGE):  # two runs not aligned by sample id
            comparisons = evaluation.compare(results, plan, choice)
        md5s = {name: lineage[f"checkpoint.{name}.md5"] for name in plan.checkpoints}
        table = evaluation.eval_table(results, plan, comparisons, md5s)
        outputs = (args.predictions, args.table, args.scaling, args.accuracy)
        evaluation.write_eval_outputs(results, plan, table, *outputs)
        run.log_text(table, "eval_table.md")
        run.log_artifact(args.predictions, "predictions")
        headline, metrics = evaluation.eval_summaries(results, plan, comparisons, choice)
        write_json(args.headline, headline)
        metrics["seconds"] = time.time() - started
        write_metrics(args.metrics, metrics)
        # the intervals as *_low / *_high: write_metrics would drop the lists
        numbers = tracked_numbers(metrics)
        run.log_metrics(numbers)
        if run.parent is not None:  # the pipeline's run: its headline numbers, comparable across pipelines
            headline = {s.name for s in plan.sets} | {"comparisons"}
            run.parent.log_metrics({k: v for k, v in numbers.items() if k.split(".", 1)[0] in headline})
            run.parent.log_text(table, "eval_table.md")
        print(table)


def checkpoint_lineage(run, checkpoints) -> dict[str, str]:
    """Tags: each checkpoint's md5 (its models/<name> dep, as the lineage tags hashed it) and, where
    one is found, the run that trained it."""
    lineage = {}
    for name, path in checkpoints.items():
        md5 = declared_dep_md5(run, path)
        lineage[f"checkpoint.{name}.md5"] = md5
        producer = run.find_run({"dvc.stage": name, "checkpoint.md5": md5})
        if producer:
            lineage[f"checkpoint.{name}.run_id"] = producer
    return lineage


if __name__ == "__main__":
    main()
