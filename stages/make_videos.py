"""Stage make_videos: the embedded default's procedural text-rich videos and questions."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.common import load_params, progress_bar, stage_run, write_metrics  # noqa: E402

STAGE = "make_videos"
OUT = Path("data/synthetic")


def main() -> None:
    from videor4.config import synthetic_config
    from videor4.data.build import make_synthetic_source

    params = load_params()
    cfg = synthetic_config(params)
    with stage_run(STAGE, params) as run:
        metrics = make_synthetic_source(OUT, cfg, progress_bar("videos", cfg.n_videos))
        write_metrics(STAGE, metrics, run)


if __name__ == "__main__":
    main()
