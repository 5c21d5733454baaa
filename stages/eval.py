"""Stage eval: every checkpoint of the curriculum on every eval set that is present.

    python stages/eval.py --models models --held-out data/built/samples_test.jsonl \
        --predictions reports/eval --table reports/eval_table.md --headline metrics/headline.json \
        --metrics metrics/eval.json --scaling metrics/eval_scaling.json --accuracy metrics/eval_accuracy.json

Single pass vs rumination per checkpoint (`eval.checkpoints`, folders under `--models`),
the test-time scaling curve (accuracy as the allowed rumination steps grow from 0 to
`eval.max_steps`) and tool use, with `videor4.evaluation`; every number with its n and
95 % interval, and paired comparisons: rumination vs single pass per checkpoint, and each
stage vs the checkpoint it was trained from (`curriculum.crp_sft_init` for CRP-SFT).
Writes the headline metrics (Acc / ANLS per checkpoint and mode: what `dvc exp show` leads
with), the full metrics, the two plots, the paper-style table (linking the figures stage's PNGs)
and the per-question predictions with their trajectories.
The MLflow run carries each checkpoint's md5 and the run that trained it.
"""

from __future__ import annotations

import sys
import time

from videor4.pipeline.runner import declared_dep_md5, fail, one_line_errors, progress_bar, stage_inputs, stage_run, write_metrics

STAGE = "eval"


def main() -> None:
    args, params = stage_inputs(__doc__, "models", "held-out", "predictions", "table", "headline", "metrics", "scaling", "accuracy")
    from videor4.core.io import atomic_dir, atomic_write_text, write_json, write_jsonl
    from videor4.evaluation.evaluate import (
        EvalDataError,
        accuracy_rows,
        curriculum_inits,
        eval_metrics,
        eval_settings,
        evaluate_checkpoint,
        headline_metrics,
        load_eval_sets,
        paired_comparisons,
        paper_table,
        scaling_rows,
        tracked_numbers,
    )
    from videor4.evaluation.figures import FIGURES
    from videor4.policy.model import ModelLoadError
    from videor4.policy.rollout import rollout_limits
    from videor4.rumination.tools import vision_config
    from videor4.rumination.video import VideoError

    started = time.time()
    with one_line_errors(STAGE, EvalDataError, ValueError, OSError):
        settings = eval_settings(params)
        inits = curriculum_inits(params)
        vision = vision_config(params, settings.vision)
        max_images = rollout_limits(params).max_images
        sets = load_eval_sets(settings, args.held_out)
    checkpoints = {name: args.models / name for name in settings.checkpoints}
    missing = [str(p) for p in checkpoints.values() if not p.is_dir()]
    if missing:
        fail(STAGE, f"checkpoint not found: {', '.join(missing)} (run the training stages first: dvc repro)")

    with stage_run(STAGE, params) as run:
        lineage = {}
        for name, path in checkpoints.items():
            md5 = declared_dep_md5(run, path)  # the models/<name> deps were hashed by the lineage tags
            lineage[f"checkpoint.{name}.md5"] = md5
            producer = run.find_run({"dvc.stage": name, "checkpoint.md5": md5})
            if producer:
                lineage[f"checkpoint.{name}.run_id"] = producer
        run.set_tags(lineage | {"eval.sets": ",".join(s.name for s in sets)})

        results = []
        with one_line_errors(STAGE, ModelLoadError, VideoError, ValueError):
            for name, path in checkpoints.items():
                result = evaluate_checkpoint(name, path, sets, vision, settings, max_images, progress_bar)
                results.append(result)
                for s in sets:
                    for point in result.summaries[s.name]["scaling"]:
                        prefix, scores = f"scaling/{s.name}/{name}", ("acc", "anls")
                        band = {f"{prefix}/{m}": point[m] for m in scores}
                        band |= {f"{prefix}/{m}_{end}": point[f"{m}_ci"][i] for m in scores for i, end in enumerate(("low", "high"))}
                        run.log_metrics(band, step=point["steps"])
                print(f"eval: {name} done in {result.seconds:.0f} s", file=sys.stderr)
        with one_line_errors(STAGE):  # two runs not aligned by sample id
            comparisons = paired_comparisons(results, sets, inits, settings.bootstrap_resamples)
        notes = ["checkpoints: " + ", ".join(f"{n} ({lineage[f'checkpoint.{n}.md5'][:8]})" for n in checkpoints)]
        notes.append("figures (stage figures): " + ", ".join(f"[{what}](figures/{name})" for name, what in FIGURES.items()))
        table = paper_table(results, sets, settings.max_steps, notes=notes, comparisons=comparisons)
        with atomic_dir(args.predictions) as out:
            for r in results:
                for set_name, modes in r.predictions.items():
                    for mode, records in modes.items():
                        write_jsonl(out / f"{r.name}.{set_name}.{mode}.jsonl", records)
        atomic_write_text(args.table, table)
        primary = sets[0].name
        write_json(args.scaling, scaling_rows(results, primary))
        write_json(args.accuracy, accuracy_rows(results, primary))
        run.log_text(table, "eval_table.md")
        run.log_artifact(args.predictions, "predictions")
        write_json(args.headline, headline_metrics(results, sets))
        metrics = eval_metrics(results, sets, settings.max_steps, comparisons)
        metrics["seconds"] = time.time() - started
        write_metrics(args.metrics, metrics)
        numbers = tracked_numbers(metrics)  # the intervals as *_low / *_high: write_metrics would drop the lists
        run.log_metrics(numbers)
        if run.parent is not None:  # the pipeline's run: its headline numbers, comparable across pipelines
            headline = {s.name for s in sets} | {"comparisons"}
            run.parent.log_metrics({k: v for k, v in numbers.items() if k.split(".", 1)[0] in headline})
            run.parent.log_text(table, "eval_table.md")
        print(table)


if __name__ == "__main__":
    main()
