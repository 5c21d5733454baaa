"""Stage build_data: OCR evidence, DRP/CRP trajectories with QC, RL samples, test split —
each dataset validated with its Great Expectations suite before it replaces the last build.

    python stages/build_data.py --videos data/synthetic --out data/built --metrics metrics/build_data.json

`--videos` is the synthetic source; with `data.source: m4vitevqa` the annotations and
videos come from `data.m4vitevqa.root` instead.
"""

from __future__ import annotations

from videor4.pipeline.runner import one_line_errors, progress_bar, stage_inputs, stage_run, write_metrics

STAGE = "build_data"


def main() -> None:
    args, params = stage_inputs(__doc__, "videos", "out", "metrics")
    from videor4.data.build import (
        BuildError,
        build_config,
        build_datasets,
        data_params,
        load_source,
        validate_dataset,
    )
    from videor4.data.validation import DataValidationError

    with one_line_errors(STAGE):
        cfg, data = build_config(params, args.out), data_params(params)
    with stage_run(STAGE, params) as run:
        with one_line_errors(STAGE, BuildError, DataValidationError, ValueError):
            writer = None
            if data.cot.writer == "model":  # only then: the policy layer is imported for the writer's model
                from videor4.policy.writer import thought_writer

                writer = thought_writer(data, cfg.cot)
            metrics = build_datasets(
                load_source(data, args.videos),
                cfg,
                validate=validate_dataset,
                progress=progress_bar,
                writer=writer,
            )
        write_metrics(args.metrics, metrics, run)


if __name__ == "__main__":
    main()
