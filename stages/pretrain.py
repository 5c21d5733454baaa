"""Stage pretrain: perception pretraining of the base, between base_model and drp_sft.

    python stages/pretrain.py pretrain --init models/base --out models/pretrain \
        --metrics metrics/pretrain.json --curve metrics/pretrain_loss.json \
        --held-out-report reports/pretrain_held_out.jsonl

Renders READ / READ_MC / READ_CLIP / LOCATE / LOCATE_CLIP examples on the fly from the synthetic
generator (a seed stream no video uses) and trains the vision tower and the language model on them with TRL's
SFTTrainer plus a dense glyph loss, then scores the checkpoint on held-out renders
(read_acc, read_lowres_acc, read_mc_acc, read_clip_acc, locate_cover, locate_clip_cover, the
boxed answers of the reads and the panels the boxes name, each with its Wilson interval).
A real base (`model.name_or_path` not `tiny`) passes through unchanged unless
`pretrain.steps` > 0.  A killed run resumes from its last checkpoint under .cache/pretrain/.
"""

from __future__ import annotations

from videor4.pipeline import runner
from videor4.pipeline.checkpoint import finish_training

STAGE = "pretrain"


def main() -> None:
    args, params, started = runner.training_stage(
        __doc__, __file__, "init", "out", "metrics", "curve", "held-out-report", stages=[STAGE]
    )
    from videor4.core.io import write_jsonl
    from videor4.data.synthetic import synthetic_config
    from videor4.policy.model import ModelLoadError, model_config
    from videor4.rumination.tools import vision_config
    from videor4.train.pretrain import effective_steps, perception_metrics, pretrain, pretrain_settings

    with runner.one_line_errors(STAGE):
        cfg, settings = model_config(params), pretrain_settings(params)
        world, vision = synthetic_config(params), vision_config(params)
    with runner.training_run(args, params, {"pretrain.steps": str(effective_steps(settings, cfg))}) as run:
        with runner.one_line_errors(STAGE, ModelLoadError, ValueError):
            metrics, curve = pretrain(
                args.init,
                args.out,
                args.work,
                world,
                vision,
                cfg,
                settings,
                log_fn=run.log_metrics,
                progress=runner.progress_bar,
            )
            if not runner.is_main_process():
                return
            rows = []
            if metrics["steps"] > 0:
                held_out, rows = perception_metrics(args.out, world, vision, settings)
                metrics.update(held_out)
        write_jsonl(args.held_out_report, rows)
        finish_training(run, args, metrics, curve, started)


if __name__ == "__main__":
    main()
