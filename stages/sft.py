"""Stages drp_sft, crp_sft and direct_sft: supervised fine-tuning on rumination trajectories.

    python stages/sft.py drp_sft --init models/base --data data/built/sft_drp.jsonl \
        --held-out data/built/samples_val.jsonl --out models/drp_sft \
        --metrics metrics/drp_sft.json --curve metrics/drp_sft_loss.json

direct_sft is the single-pass baseline: drp_sft's command with `direct_sft`, --out models/direct_sft
and its own metrics; it trains on the same DRP trajectories (`sft.direct`: drp's settings and
`target: direct`), each answered in one turn without a tool call.

crp_sft takes no --init: it starts from params `curriculum.crp_sft_init`, read and checked
against the allowed checkpoints here (a value on its shell command line would run as code).
Trains with TRL's SFTTrainer (DeepSpeed when `sft.deepspeed` names a config),
saves a Hugging Face checkpoint to `--out`, measures on held-out prompts how often
greedy generation gives a well-formed tool call or boxed answer (direct_sft: a boxed
answer, no call), and writes the metrics and the loss curve.  A killed run resumes from its
last checkpoint under .cache/<stage>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from videor4.pipeline import runner
from videor4.pipeline.checkpoint import finish_training

PARAMS_KEY = {"drp_sft": "drp", "crp_sft": "crp", "direct_sft": "direct"}  # stage → its section under sft:
# crp_sft's start is a param, not a path on its command line (see above)
PATHS = {"drp_sft": runner.TRAINING_PATHS, "crp_sft": tuple(p for p in runner.TRAINING_PATHS if p != "init")}


def main() -> None:
    paths = PATHS.get(sys.argv[1] if len(sys.argv) > 1 else "", runner.TRAINING_PATHS)
    args, params, started = runner.training_stage(__doc__, __file__, *paths, stages=PARAMS_KEY)
    if args.stage == "crp_sft":
        from videor4.train.lifecycle import curriculum_params

        with runner.one_line_errors(args.stage):
            args.init = Path(curriculum_params(params).crp_sft_init)
    from videor4.policy.encoding import EncodingError
    from videor4.policy.model import ModelLoadError, model_config
    from videor4.rumination.tools import vision_config
    from videor4.train.sft import SFTDataError, format_check, sft_settings, train_sft

    with runner.one_line_errors(args.stage):
        cfg, settings = model_config(params), sft_settings(params, PARAMS_KEY[args.stage])
    with runner.training_run(args, params, {"trajectories": str(args.data)}) as run:
        with runner.one_line_errors(args.stage, SFTDataError, EncodingError, ModelLoadError, ValueError):
            metrics, curve = train_sft(
                args.data,
                args.init,
                args.out,
                args.work,
                cfg,
                settings,
                log_fn=run.log_metrics,
                progress=runner.progress_bar,
            )
            if not runner.is_main_process():
                return
            rate, generations = format_check(
                args.out,
                args.held_out,
                vision_config(params),
                settings.format_eval_prompts,
                settings.format_eval_max_new_tokens,
                target=settings.target,
            )
        metrics["format_valid_rate"] = rate
        metrics["format_eval_prompts"] = len(generations)
        run.log_dict(generations, f"{args.stage}_generations.json")
        finish_training(run, args, metrics, curve, started)


if __name__ == "__main__":
    main()
