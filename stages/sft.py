"""Stages drp_sft and crp_sft: supervised fine-tuning on rumination trajectories.

    python stages/sft.py drp_sft --init models/base --data data/built/sft_drp.jsonl \
        --held-out data/built/samples_test.jsonl --out models/drp_sft \
        --metrics metrics/drp_sft.json --curve metrics/drp_sft_loss.json

Trains with TRL's SFTTrainer (DeepSpeed when `sft.deepspeed` names a config),
saves a Hugging Face checkpoint to `--out`, measures on held-out prompts how often
greedy generation gives a well-formed tool call or boxed answer, and writes the
metrics and the loss curve.  A killed run resumes from its last checkpoint under
.cache/<stage>/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from videor4.pipeline.runner import (
    MAX_ARTIFACT_MB,
    fail,
    is_main_process,
    load_params,
    log_checkpoint,
    progress_bar,
    relaunch_distributed,
    stage_args,
    stage_run,
    write_metrics,
)

PARAMS_KEY = {"drp_sft": "drp", "crp_sft": "crp"}  # stage → its section under sft:


def main() -> None:
    args = stage_args(__doc__, "init", "data", "held-out", "out", "metrics", "curve", stages=PARAMS_KEY)
    from videor4.core.io import write_json
    from videor4.policy.encoding import EncodingError
    from videor4.policy.model import ModelLoadError, model_config
    from videor4.rumination.tools import vision_config
    from videor4.train.sft import SFTDataError, format_check, sft_settings, train_sft

    params = load_params()
    relaunch_distributed(params, __file__, sys.argv[1:])
    started = time.time()
    try:
        cfg, settings = model_config(params), sft_settings(params, PARAMS_KEY[args.stage])
    except ValueError as exc:
        fail(args.stage, exc)

    with stage_run(args.stage, params) as run:
        run.set_tags({"init": str(args.init), "trajectories": str(args.data)})
        try:
            metrics, curve = train_sft(
                args.data, args.init, args.out, Path(".cache") / args.stage, cfg, settings,
                log_fn=run.log_metrics, progress=progress_bar,
            )
            if not is_main_process():
                return
            rate, generations = format_check(
                args.out, args.held_out, vision_config(params), settings.format_eval_prompts, settings.format_eval_max_new_tokens
            )
        except (SFTDataError, EncodingError, ModelLoadError, ValueError) as exc:
            fail(args.stage, exc)
        metrics["format_valid_rate"] = rate
        metrics["format_eval_prompts"] = len(generations)
        metrics["seconds"] = time.time() - started
        write_json(args.curve, curve)
        run.log_dict(generations, f"{args.stage}_generations.json")
        metrics["checkpoint"] = log_checkpoint(run, args.out, MAX_ARTIFACT_MB)
        write_metrics(args.metrics, metrics, run)


if __name__ == "__main__":
    main()
