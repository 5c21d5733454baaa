"""Stage world_check: does the low-resolution view hide the text the questions ask to read?

    python stages/world_check.py --synthetic data/synthetic --metrics metrics/world_check.json

Reads the generated videos as the model is shown them (`vision:`) and reports how well a
no-learning palette decoder and linear probes read each text in that view, beside the same
probe on source-resolution crops (`videor4.data.world_check`; `world_check:` in params.yaml).
"""

from __future__ import annotations

from videor4.pipeline.runner import one_line_errors, stage_inputs, stage_run, write_metrics

STAGE = "world_check"


def main() -> None:
    args, params = stage_inputs(__doc__, "synthetic", "metrics")
    from videor4.data.synthetic import synthetic_config
    from videor4.data.world_check import world_check, world_check_config
    from videor4.rumination.tools import vision_config
    from videor4.rumination.video import VideoError

    with one_line_errors(STAGE):
        cfg = world_check_config(params)
        synthetic = synthetic_config(params)
        vision = vision_config(params)
    with stage_run(STAGE, params) as run:
        with one_line_errors(STAGE, ValueError, VideoError, OSError):
            metrics = world_check(args.synthetic, vision, synthetic.style, cfg)
        write_metrics(args.metrics, {"preset": synthetic.preset, **metrics}, run)


if __name__ == "__main__":
    main()
