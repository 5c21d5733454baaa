"""Stage build_data: OCR evidence, DRP/CRP trajectories with QC, RL samples, test split —
each dataset validated with its Great Expectations suite before it replaces the last build."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.common import fail, load_params, progress_bar, stage_run, write_metrics  # noqa: E402

STAGE = "build_data"
OUT = Path("data/built")
SYNTHETIC = Path("data/synthetic")


def main() -> None:
    from videor4.config import build_config, section
    from videor4.data.build import (
        BuildError,
        build_datasets,
        load_m4vitevqa_source,
        load_synthetic_source,
        validate_dataset,
    )
    from videor4.validation import DataValidationError

    params = load_params()
    cfg = build_config(params, OUT)
    data = section(params, "data")

    with stage_run(STAGE, params) as run:
        try:
            if data.get("source", "synthetic") == "synthetic":
                source = load_synthetic_source(SYNTHETIC)
            else:
                source = load_m4vitevqa_source(data.get("m4vitevqa") or {})
            metrics = build_datasets(source, cfg, validate=validate_dataset, progress=progress_bar)
        except (BuildError, DataValidationError, ValueError) as exc:
            fail(STAGE, exc)
        write_metrics(STAGE, metrics, run)


if __name__ == "__main__":
    main()
