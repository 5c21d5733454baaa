"""Stages drp_sft and crp_sft: supervised fine-tuning on rumination trajectories.

    python stages/sft.py drp_sft --init models/base
    python stages/sft.py crp_sft --init models/rl_d

Trains with TRL's SFTTrainer (DeepSpeed when `sft.deepspeed` names a config),
saves a Hugging Face checkpoint to models/<stage>, measures on held-out prompts
how often greedy generation gives a well-formed tool call or boxed answer, and
writes metrics/<stage>.json plus the loss curve (metrics/<stage>_loss.json).
A killed run resumes from its last checkpoint under .cache/<stage>/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.common import (  # noqa: E402
    HELD_OUT,
    MAX_ARTIFACT_MB,
    METRICS_DIR,
    fail,
    is_main_process,
    load_params,
    log_checkpoint,
    progress_bar,
    relaunch_distributed,
    stage_run,
    training_stage_args,
    write_metrics,
)

STAGES = {  # stage → (trajectories, params key)
    "drp_sft": (Path("data/built/sft_drp.jsonl"), "drp"),
    "crp_sft": (Path("data/built/sft_crp.jsonl"), "crp"),
}


def main() -> None:
    args = training_stage_args(__doc__, STAGES)

    from videor4.config import model_config, sft_settings, vision_config
    from videor4.encoding import EncodingError
    from videor4.io import write_json
    from videor4.model import ModelLoadError
    from videor4.sft import SFTDataError, format_check, train_sft

    params = load_params()
    relaunch_distributed(params, __file__, sys.argv[1:])
    trajectories, key = STAGES[args.stage]
    out = Path("models") / args.stage
    started = time.time()
    try:
        cfg, settings = model_config(params), sft_settings(params, key)
    except ValueError as exc:
        fail(args.stage, exc)

    with stage_run(args.stage, params) as run:
        run.set_tags({"init": args.init, "trajectories": str(trajectories)})
        try:
            metrics, curve = train_sft(
                trajectories,
                args.init,
                out,
                Path(".cache") / args.stage,
                cfg,
                settings,
                log_fn=run.log_metrics,
                progress=progress_bar,
            )
            if not is_main_process():
                return
            rate, generations = format_check(
                out, HELD_OUT, vision_config(params), settings.format_eval_prompts, settings.format_eval_max_new_tokens
            )
        except (SFTDataError, EncodingError, ModelLoadError, ValueError) as exc:
            fail(args.stage, exc)
        metrics["format_valid_rate"] = rate
        metrics["format_eval_prompts"] = len(generations)
        metrics["seconds"] = time.time() - started
        write_json(METRICS_DIR / f"{args.stage}_loss.json", curve)
        run.log_dict(generations, f"{args.stage}_generations.json")
        metrics["checkpoint"] = log_checkpoint(run, out, MAX_ARTIFACT_MB)
        write_metrics(args.stage, metrics, run)


if __name__ == "__main__":
    main()
