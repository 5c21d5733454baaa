"""Stages rl_d and rl_c: GRPO on multi-turn rumination rollouts.

    python stages/rl.py rl_d --init models/drp_sft
    python stages/rl.py rl_c --init models/crp_sft

Trains with `videor4.grpo` (TRL's GRPOTrainer; DeepSpeed when `rl.deepspeed`
names a config), saves a Hugging Face checkpoint to models/<stage>, scores the
policy on held-out prompts before and after, and writes metrics/<stage>.json
plus the per-step curve (metrics/<stage>_curve.json).  Rollout transcripts go to
MLflow as artifacts.  A killed run resumes from its last checkpoint under
.cache/<stage>/.
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

STAGES = {"rl_d": Path("data/built/rl_d.jsonl"), "rl_c": Path("data/built/rl_c.jsonl")}
CURVE_KEYS = ("step", "reward", "reward_std", "accuracy", "kl", "loss", "rumination_steps", "tools/invalid_call_rate")


def main() -> None:
    args = training_stage_args(__doc__, STAGES)

    from videor4.config import grpo_settings, model_config, reward_config, rollout_limits, vision_config
    from videor4.encoding import EncodingError
    from videor4.grpo import RLDataError, train_grpo
    from videor4.io import write_json
    from videor4.model import ModelLoadError

    params = load_params()
    relaunch_distributed(params, __file__, sys.argv[1:])
    out = Path("models") / args.stage
    started = time.time()
    try:
        settings = grpo_settings(params, args.stage)
        settings.validate()
        configs = (model_config(params), settings, rollout_limits(params), reward_config(params), vision_config(params))
    except ValueError as exc:
        fail(args.stage, exc)

    with stage_run(args.stage, params) as run:
        run.set_tags({"init": args.init, "prompts": str(STAGES[args.stage]), "held_out": str(HELD_OUT)})

        def log_samples(step: int, texts: list[str]) -> None:
            run.log_text("\n\n---\n\n".join(texts), f"rollouts/step_{step:05d}.md")

        try:
            metrics, curve, samples = train_grpo(
                STAGES[args.stage],
                HELD_OUT,
                args.init,
                out,
                Path(".cache") / args.stage,
                *configs,
                log_fn=run.log_metrics,
                progress=progress_bar,
                on_samples=log_samples,
            )
        except (RLDataError, EncodingError, ModelLoadError, ValueError) as exc:
            fail(args.stage, exc)
        if not is_main_process():
            return
        for when, texts in samples.items():
            run.log_text("\n\n---\n\n".join(texts), f"rollouts/held_out_{when}.md")
        metrics["seconds"] = time.time() - started
        write_json(METRICS_DIR / f"{args.stage}_curve.json", [{k: p[k] for k in CURVE_KEYS if k in p} for p in curve])
        metrics["checkpoint"] = log_checkpoint(run, out, MAX_ARTIFACT_MB)
        write_metrics(args.stage, metrics, run)


if __name__ == "__main__":
    main()
