"""GRPO on multi-turn rumination rollouts (RL_d, RL_c), on TRL's GRPOTrainer.

The split follows TRL: `GRPOSettings` (a dataclass filled from params.yaml) is
the config, `train_grpo` runs the trainer.  TRL keeps what it does well — the
clipped-ratio loss, the KL to a frozen reference, micro-batching of
multi-image batches, optimizer, scheduler, checkpoints, resume, DeepSpeed and
accelerate.  What TRL cannot do for Video-R4 (image-returning tools: the
observation images must be in the forward pass with multimodal positions, but
masked from the loss) is `RuminationGRPOTrainer._generate_and_score_completions`:
rollouts come from the shared `RolloutEngine`, rewards from `rewards.score`,
and the batch is packed in TRL's layout with the observation tokens masked by
`tool_mask`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videor4.core.params import curriculum_settings
from videor4.policy.model import ModelConfig, count_parameters, load_policy, prepare_for_training
from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
from videor4.train.lifecycle import (
    LogFn,
    dir_digest,
    fingerprint,
    logged_curve,
    quiet,
    step_logger,
    train_resumable,
    trainer_arguments,
    use_bf16,
)
from videor4.train.rewards import REWARDS, RewardConfig, RewardContext, VisionFeatures, score, weights

if TYPE_CHECKING:
    from videor4.rumination.trajectory import Trajectory


@dataclass
class GRPOSettings:
    """One RL stage's settings (`rl:` shared keys, overridden by `rl.rl_d` / `rl.rl_c`)."""

    group_size: int = 8  # G rollouts per prompt
    prompts_per_step: int = 4  # per device and optimizer step; whole groups stay on one device
    steps: int = 10  # optimizer steps
    updates_per_batch: int = 1  # μ: optimizer steps on each batch of rollouts (>1 makes the clip bite)
    micro_batch_size: int = 8  # rollouts per forward/backward
    learning_rate: float = 1e-6
    beta_kl: float = 0.04  # KL to the frozen initial policy
    epsilon: float = 0.2  # PPO clip
    loss_type: str = "grpo"  # any TRL loss_type: grpo | dapo | dr_grpo | bnpo | ...
    scale_rewards: str = "group"  # group | batch | none
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256  # per assistant turn
    max_total_tokens: int = 8192
    rollout_batch_size: int = 32  # rollouts decoded together
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int = 5  # checkpoints a killed run resumes from
    bf16: str = "auto"
    deepspeed: str | None = None
    seed: int = 0
    eval_prompts: int = 16  # held-out prompts scored before and after training
    eval_group_size: int = 4
    sample_trajectories: int = 4  # transcripts kept per logged step

    def validate(self) -> None:
        if self.group_size < 2:
            raise ValueError("rl.group_size must be at least 2 (advantages are relative to the group)")
        if (self.prompts_per_step * self.group_size) % self.micro_batch_size:
            raise ValueError(
                f"rl.prompts_per_step × rl.group_size ({self.prompts_per_step * self.group_size}) "
                f"must be a multiple of rl.micro_batch_size ({self.micro_batch_size})"
            )

    def rollout_settings(self, limits: RolloutSettings) -> RolloutSettings:
        return RolloutSettings(
            max_tool_calls=limits.max_tool_calls,
            max_images=limits.max_images,
            max_new_tokens=self.max_new_tokens,
            max_total_tokens=self.max_total_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            batch_size=self.rollout_batch_size,
        )


class RLDataError(ValueError):
    """The RL prompts cannot be used."""


def load_prompts(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    from videor4.core.io import read_jsonl
    from videor4.core.schema import Sample

    rows = []
    for i, row in enumerate(read_jsonl(path)):
        try:
            Sample.from_dict(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise RLDataError(f"{path}, row {i + 1}: not a sample ({exc})") from exc
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise RLDataError(f"{path} holds no prompts")
    return rows


# ---------------------------------------------------------------- statistics of a batch of rollouts
def rollout_stats(rollouts: Sequence[Any], scores: dict[str, list[float]]) -> dict[str, float]:
    """Means over rollouts: each reward component, the total, tool use and lengths."""
    n = max(len(rollouts), 1)
    calls = sum(len(r.ops) for r in rollouts)
    stats = {f"rewards/{name}": sum(values) / n for name, values in scores.items() if name != "total"}
    stats.update(
        {
            "reward": sum(scores["total"]) / n,
            "accuracy": sum(scores["accuracy"]) / n,
            "tools/clip_calls_per_rollout": sum(r.calls("clipping") for r in rollouts) / n,
            "tools/crop_calls_per_rollout": sum(r.calls("cropping") for r in rollouts) / n,
            "tools/invalid_call_rate": sum(r.invalid_calls for r in rollouts) / max(calls, 1),
            "rumination_steps": calls / n,
            "response_length": sum(r.num_generated for r in rollouts) / n,
            "answered": sum(r.finish_reason == "answer" for r in rollouts) / n,
        }
    )
    return stats


def transcript(traj: Trajectory, reward: float | None = None) -> str:
    """A rollout's trajectory as readable Markdown: question, each turn, each call's observation, the
    answer."""
    head = f"### {traj.sample_id}" + (f"  (reward {reward:.3f})" if reward is not None else "")
    lines = [head, f"**Q:** {traj.question}  **gold:** {traj.answers}"]
    for i, text in enumerate(traj.turn_texts()):
        lines.append(f"\n**turn {i + 1}**\n\n```\n{text.strip()}\n```")
        if i < len(traj.steps):
            step = traj.steps[i]
            lines.append(
                f"→ {step.tool_call.name if step.tool_call else 'invalid call'}: {step.observation_text}"
            )
    lines.append(f"\n**answer:** {traj.final_answer!r} ({traj.finish_reason})")
    return "\n".join(lines)


def group_advantages(rewards, group_size: int, scale: str = "group"):
    """GRPO advantages: each reward minus its group's mean, divided by the group's std (`scale`
    group), the batch's (batch) or nothing (none).  Also returns which groups have zero variance:
    their advantages are 0, so they contribute no policy gradient."""
    grouped = rewards.view(-1, group_size)
    std = grouped.std(1)
    advantages = rewards - grouped.mean(1).repeat_interleave(group_size)
    if scale == "group":
        advantages = advantages / (std.repeat_interleave(group_size) + 1e-4)
    elif scale == "batch":
        advantages = advantages / (rewards.std() + 1e-4)
    elif scale != "none":
        raise ValueError(f"unknown scale_rewards {scale!r} (group | batch | none)")
    return advantages, std < 1e-6


# ---------------------------------------------------------------- the trainer
def pack_rollouts(rollouts, encoder, device) -> dict[str, Any]:
    """TRL's batch layout: the prompt (left-padded) and everything after it as the "completion"
    (right-padded), `tool_mask` 1 only on tokens the policy sampled, sampling-time log-probs as the
    old policy's, and every image of every rollout in order, with multimodal token types."""
    import torch
    from trl.trainer.utils import pad

    def tensor(rows, value, side):
        return pad([torch.tensor(x) for x in rows], padding_value=value, padding_side=side).to(device)

    prompts = [r.input_ids[: r.prompt_length] for r in rollouts]
    completions = [r.input_ids[r.prompt_length :] for r in rollouts]
    batch = {
        "prompt_ids": tensor(prompts, encoder.pad_token_id, "left"),
        "prompt_mask": tensor([[1] * len(p) for p in prompts], 0, "left"),
        "completion_ids": tensor(completions, encoder.pad_token_id, "right"),
        "completion_mask": tensor([[1] * len(c) for c in completions], 0, "right"),
        "tool_mask": tensor([r.completion_mask[r.prompt_length :] for r in rollouts], 0, "right"),
        "old_per_token_logps": tensor(
            [r.logprobs[r.prompt_length :] for r in rollouts], 0.0, "right"
        ).float(),
    }
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    batch["mm_token_type_ids"] = (ids == encoder.image_token_id).long()
    images = [r for r in rollouts if r.pixel_values]
    if images:
        batch["pixel_values"] = torch.cat([p for r in images for p in r.pixel_values]).to(device)
        batch["image_grid_thw"] = torch.stack([g for r in images for g in r.image_grid_thw]).to(device)
        batch["num_images"] = [len(r.pixel_values) for r in rollouts]
    return batch


def _trainer_class():
    """`RuminationGRPOTrainer`, imported here: its module imports torch and TRL."""
    from videor4.train.grpo_trainer import RuminationGRPOTrainer

    return RuminationGRPOTrainer


def trl_reward_functions(config: RewardConfig) -> tuple[list[Callable], list[float]]:
    """The active reward components as TRL reward functions (`rollout=` keyword) and their weights.
    TRL needs them to name and weight its rewards; the batch is scored by `rewards.score`."""
    funcs, ws = [], []
    for name, weight in weights(config).items():
        if not weight:
            continue

        def reward(prompts=None, completions=None, rollout=(), reward_context=None, _name=name, **_):
            return REWARDS[_name](rollout, reward_context or RewardContext(config))

        reward.__name__ = name
        funcs.append(reward)
        ws.append(float(weight))
    return funcs, ws


# ---------------------------------------------------------------- held-out evaluation
def evaluate_policy(
    model,
    encoder,
    rows: Sequence[dict[str, Any]],
    vision,
    rollout: RolloutSettings,
    rewards: RewardConfig,
    group_size: int,
    seed: int,
) -> tuple[dict[str, float], list[Any], dict[str, list[float]]]:
    """Mean rewards and tool use of `group_size` seeded rollouts per held-out prompt."""
    import torch

    torch.manual_seed(seed)
    engine = RolloutEngine(model, encoder, rollout)
    rollouts = engine.run(
        [r for i, row in enumerate(rows) for r in start_group(engine, row, vision, group_size, i)]
    )
    scores = score(rollouts, RewardContext(rewards, VisionFeatures(model, encoder.image_processor)))
    return rollout_stats(rollouts, scores), rollouts, scores


# ---------------------------------------------------------------- training
def make_trainer(
    policy,
    encoder,
    rows: Sequence[dict[str, Any]],
    settings: GRPOSettings,
    rollout: RolloutSettings,
    rewards: RewardConfig,
    vision,
    model_config: ModelConfig,
    work_dir: Path,
    log_fn: LogFn | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
):
    """The TRL trainer for `settings`, over the prompt rows (one optimizer step per
    `prompts_per_step` × G rollouts, micro-batched; checkpoints in `work_dir`)."""
    import datasets
    from trl import GRPOConfig

    settings.validate()
    per_step = settings.prompts_per_step * settings.group_size
    funcs, reward_weights = trl_reward_functions(rewards)
    args = GRPOConfig(
        **trainer_arguments(work_dir, settings, model_config),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=per_step // settings.micro_batch_size,
        num_generations=settings.group_size,
        num_iterations=settings.updates_per_batch,
        beta=settings.beta_kl,
        epsilon=settings.epsilon,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        reward_weights=reward_weights,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_completion_length=settings.max_total_tokens,
        log_completions=False,
    )
    train_set = datasets.Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "sample": [json.dumps(r) for r in rows],
            "index": list(range(len(rows))),
        }
    )
    trainer = _trainer_class()(
        model=prepare_for_training(policy.model, model_config),
        reward_funcs=funcs,
        args=args,
        train_dataset=train_set,
        processing_class=policy.tokenizer,
        callbacks=[step_logger(log_fn, progress)],
    )
    quiet(trainer)
    trainer.setup_rumination(encoder, vision, rollout, rewards, settings.sample_trajectories)
    return trainer


def train_grpo(
    prompts_path: str | os.PathLike,
    held_out_path: str | os.PathLike,
    init: str | os.PathLike,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    model_config: ModelConfig,
    settings: GRPOSettings,
    rollout_limits: RolloutSettings,
    rewards: RewardConfig,
    vision,
    log_fn: LogFn | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    on_samples: Callable[[int, list[str]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, list[str]]]:
    """GRPO from `init` on the prompts; saves a HF checkpoint to `out_dir` (atomically).

    Returns (metrics, per-step curve, held-out transcripts before/after); processes other
    than rank 0 of a multi-process launch return empty ones.  Held-out rewards
    are measured before and after with the same seeded rollouts.  Resumes from `work_dir`'s last
    checkpoint when the inputs and settings are unchanged since an interrupted run.
    """
    from videor4.core.launch import is_main_process, local_device, world_size
    from videor4.policy.encoding import PolicyEncoder

    started = time.time()
    bf16 = use_bf16(settings.bf16)
    dtype = "bfloat16" if bf16 else "float32"
    device = local_device()
    main = is_main_process()  # only rank 0 scores the held-out set; every rank trains
    rows = load_prompts(prompts_path)
    held_out = load_prompts(held_out_path, settings.eval_prompts)
    rollout = settings.rollout_settings(rollout_limits)
    policy = load_policy(init, dtype=dtype, attn_implementation=model_config.attn_implementation)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)

    work = Path(work_dir)
    key = _run_key(prompts_path, held_out_path, init, model_config, settings, rollout, rewards)
    scorer = _HeldOut(encoder, held_out, vision, rollout, rewards, settings, dtype, device)
    if main:
        before, before_samples = scorer.evaluate(init)

    trainer = make_trainer(
        policy, encoder, rows, settings, rollout, rewards, vision, model_config, work, log_fn, progress
    )
    if on_samples:
        trainer.add_callback(_samples_callback(trainer, on_samples))
    trained = train_resumable(trainer, policy, out_dir, work, key, model_config.lora.enabled)
    if not main:
        return {}, [], {}

    # the saved checkpoint, as every later stage will load it (also whole under ZeRO-3)
    after, after_samples = scorer.evaluate(out_dir)
    curve = logged_curve(trainer, "reward")
    metrics = _grpo_metrics(before, after, curve, trainer, trained, len(held_out), len(rows), settings)
    metrics.update(seconds=time.time() - started, parameters=count_parameters(policy.model))
    metrics.update(bf16=bf16, processes=world_size())
    return metrics, curve, {"before": before_samples, "after": after_samples}


def _run_key(
    prompts_path: str | os.PathLike,
    held_out_path: str | os.PathLike,
    init: str | os.PathLike,
    model_config: ModelConfig,
    settings: GRPOSettings,
    rollout: RolloutSettings,
    rewards: RewardConfig,
) -> str:
    """The fingerprint of a run's inputs and settings: a work dir's checkpoints resume only the same run."""
    from videor4.core.io import files_md5

    return fingerprint(
        data=files_md5([prompts_path, held_out_path]),
        init=dir_digest(init),
        model=asdict(model_config),
        settings=asdict(settings),
        rollout=asdict(rollout),
        rewards=asdict(rewards),
    )


@dataclass
class _HeldOut:
    """The held-out prompts and everything needed to score a checkpoint on them, the same way before
    and after training."""

    encoder: Any
    rows: list[dict[str, Any]]
    vision: Any
    rollout: RolloutSettings
    rewards: RewardConfig
    settings: GRPOSettings
    dtype: str
    device: Any

    def evaluate(self, path: str | os.PathLike) -> tuple[dict[str, float], list[str]]:
        """(mean rewards and tool use, the first rollouts' transcripts) of the checkpoint at `path`."""
        settings = self.settings
        model = load_policy(path, dtype=self.dtype, device=self.device).model
        group_size, seed = settings.eval_group_size, settings.seed
        stats, rollouts, scores = evaluate_policy(
            model, self.encoder, self.rows, self.vision, self.rollout, self.rewards, group_size, seed
        )
        pairs = list(zip(rollouts, scores["total"]))[: settings.sample_trajectories]
        return stats, [transcript(r.to_trajectory(), t) for r, t in pairs]


def _grpo_metrics(
    before: dict[str, float],
    after: dict[str, float],
    curve: list[dict[str, float]],
    trainer,
    trained,
    n_held_out: int,
    n_prompts: int,
    settings: GRPOSettings,
) -> dict[str, Any]:
    """The run's metrics up to `train_seconds` (the caller adds the total time, the model's size and
    the devices)."""
    kls = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    return {
        "reward_start": before["reward"],
        "reward_end": after["reward"],
        "accuracy_start": before["accuracy"],
        "accuracy_end": after["accuracy"],
        "kl_last": kls[-1] if kls else 0.0,
        "clip_calls_per_rollout": after["tools/clip_calls_per_rollout"],
        "crop_calls_per_rollout": after["tools/crop_calls_per_rollout"],
        "invalid_call_rate": after["tools/invalid_call_rate"],
        "rumination_steps": after["rumination_steps"],
        "held_out": {
            "prompts": n_held_out,
            "group_size": settings.eval_group_size,
            "before": before,
            "after": after,
        },
        "train_reward_first": curve[0]["reward"] if curve else None,
        "train_reward_last": curve[-1]["reward"] if curve else None,
        "zero_variance_groups": sum(p.get("zero_variance_groups", 0.0) for p in curve),
        "steps": int(trained.output.global_step),
        "resumed_from_step": trained.resumed_from_step,
        "prompts": n_prompts,
        "train_seconds": trained.seconds,
    }


def _features_callback(features: VisionFeatures):
    from transformers import TrainerCallback

    class FreshFeatures(TrainerCallback):
        """After each optimizer step, drops the reward features of a vision tower that trains."""

        def on_step_end(self, args, state, control, **kwargs):
            features.on_optimizer_step()

    return FreshFeatures()


def _samples_callback(trainer, on_samples: Callable[[int, list[str]], None]):
    from transformers import TrainerCallback

    class SampleLogger(TrainerCallback):
        """Hands the latest batch's rollout transcripts to the caller at each logging step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and trainer.samples:
                on_samples(state.global_step, trainer.samples)

    return SampleLogger()


RL_CURRICULUM_KEYS = ("rl_d", "rl_c")


def grpo_settings(params: dict[str, Any], which: str) -> GRPOSettings:
    """`rl:` shared keys overridden by `rl.<which>` (rl_d or rl_c)."""
    return curriculum_settings(GRPOSettings, params, "rl", which, RL_CURRICULUM_KEYS)
