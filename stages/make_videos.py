"""Stage make_videos: the embedded default's procedural text-rich videos and questions.

python stages/make_videos.py --out data/synthetic --metrics metrics/make_videos.json
"""

from __future__ import annotations

from videor4.pipeline.runner import one_line_errors, progress_bar, stage_inputs, stage_run, write_metrics

STAGE = "make_videos"


def main() -> None:
    args, params = stage_inputs(__doc__, "out", "metrics")
    from videor4.data.build import make_synthetic_source
    from videor4.data.synthetic import synthetic_config

    with one_line_errors(STAGE):
        cfg = synthetic_config(params)
    with stage_run(STAGE, params) as run:
        metrics = make_synthetic_source(args.out, cfg, progress_bar("videos", cfg.n_videos))
        write_metrics(args.metrics, metrics, run)


if __name__ == "__main__":
    main()
