"""Stage make_videos: the embedded default's procedural text-rich videos and questions.

    python stages/make_videos.py --out data/synthetic --metrics metrics/make_videos.json
"""

from __future__ import annotations

from videor4.pipeline.runner import (
    fail,
    load_params,
    progress_bar,
    stage_args,
    stage_run,
    write_metrics,
)

STAGE = "make_videos"


def main() -> None:
    args = stage_args(__doc__, "out", "metrics")
    from videor4.data.build import make_synthetic_source
    from videor4.data.synthetic import synthetic_config

    params = load_params()
    try:
        cfg = synthetic_config(params)
    except ValueError as exc:
        fail(STAGE, exc)
    with stage_run(STAGE, params) as run:
        metrics = make_synthetic_source(args.out, cfg, progress_bar("videos", cfg.n_videos))
        write_metrics(args.metrics, metrics, run)


if __name__ == "__main__":
    main()
