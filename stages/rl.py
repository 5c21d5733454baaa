"""Stages rl_d and rl_c: GRPO on multi-turn rumination rollouts.

    python stages/rl.py rl_d --init models/drp_sft --data data/built/rl_d.jsonl \
        --held-out data/built/samples_val.jsonl --out models/rl_d \
        --metrics metrics/rl_d.json --curve metrics/rl_d_curve.json

Trains with `videor4.train.grpo` (TRL's GRPOTrainer; DeepSpeed when `rl.deepspeed`
names a config), saves a Hugging Face checkpoint to `--out`, scores the policy on
held-out prompts before and after, and writes the metrics and the per-step curve.
Rollout transcripts go to MLflow as artifacts.  A killed run resumes from its last
checkpoint under .cache/<stage>/.
"""

from __future__ import annotations

from videor4.pipeline import runner
from videor4.pipeline.checkpoint import finish_training

STAGES = ("rl_d", "rl_c")
CURVE_KEYS = (
    "step",
    "reward",
    "reward_std",
    "accuracy",
    "kl",
    "loss",
    "rumination_steps",
    "tools/invalid_call_rate",
)


def main() -> None:
    args, params, started = runner.training_stage(__doc__, __file__, *runner.TRAINING_PATHS, stages=STAGES)
    from videor4.policy.encoding import EncodingError
    from videor4.policy.model import ModelLoadError, model_config
    from videor4.policy.rollout import rollout_limits
    from videor4.rumination.tools import vision_config
    from videor4.train.grpo import RLDataError, grpo_settings, train_grpo
    from videor4.train.rewards import reward_config

    with runner.one_line_errors(args.stage):
        settings = grpo_settings(params, args.stage)
        settings.validate()
        configs = (
            model_config(params),
            settings,
            rollout_limits(params),
            reward_config(params),
            vision_config(params),
        )
    with runner.training_run(
        args, params, {"prompts": str(args.data), "held_out": str(args.held_out)}
    ) as run:

        def log_samples(step: int, texts: list[str]) -> None:
            run.log_text("\n\n---\n\n".join(texts), f"rollouts/step_{step:05d}.md")

        with runner.one_line_errors(args.stage, RLDataError, EncodingError, ModelLoadError, ValueError):
            metrics, curve, samples = train_grpo(
                args.data,
                args.held_out,
                args.init,
                args.out,
                args.work,
                *configs,
                log_fn=run.log_metrics,
                progress=runner.progress_bar,
                on_samples=log_samples,
            )
        if not runner.is_main_process():
            return
        for when, texts in samples.items():
            run.log_text("\n\n---\n\n".join(texts), f"rollouts/held_out_{when}.md")
        finish_training(run, args, metrics, [{k: p[k] for k in CURVE_KEYS if k in p} for p in curve], started)


if __name__ == "__main__":
    main()
