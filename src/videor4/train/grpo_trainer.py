"""`RuminationGRPOTrainer`: TRL's GRPOTrainer whose completions are multi-turn rumination rollouts.

Imports torch and TRL at module level, so `videor4.train.grpo` imports it only when a trainer
is built (`grpo._trainer_class`); everything else about GRPO lives there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
from videor4.train.grpo import _features_callback, group_advantages, pack_rollouts, rollout_stats, transcript
from videor4.train.rewards import RewardConfig, RewardContext, VisionFeatures, score


class RuminationGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose completions are multi-turn rumination rollouts with image observations."""

    def setup_rumination(
        self, encoder, vision, rollout: RolloutSettings, rewards: RewardConfig, sample_count: int
    ):
        self.encoder, self.vision, self.rollout_settings = encoder, vision, rollout
        features = VisionFeatures(self.accelerator.unwrap_model(self.model), encoder.image_processor)
        self.reward_context = RewardContext(rewards, features)
        self.add_callback(_features_callback(features))  # a trained tower's cached features go stale
        self.sample_count, self.samples = sample_count, []

    def rollouts_for(self, rows: Sequence[dict[str, Any]]):
        """G rollouts of each prompt; `rows` holds each prompt G times in a row (TRL's sampler).
        A group's id is its position in the batch: a prompt drawn twice makes two groups."""
        G = self.num_generations
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
            engine = RolloutEngine(unwrapped, self.encoder, self.rollout_settings)
            starts = [start_group(engine, rows[g], self.vision, G, g // G) for g in range(0, len(rows), G)]
            return engine.run([r for group in starts for r in group])

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        device, G = self.accelerator.device, self.num_generations
        mode = "train" if self.model.training else "eval"
        if len(inputs) % G or any(
            inputs[i]["index"] != inputs[i - i % G]["index"] for i in range(len(inputs))
        ):
            raise RuntimeError("a generation batch must hold whole groups of G rollouts of one prompt")
        rollouts = self.rollouts_for([json.loads(x["sample"]) for x in inputs])
        scores = score(rollouts, self.reward_context)

        rewards = torch.tensor(scores["total"], dtype=torch.float32, device=device)
        advantages, zero_std = group_advantages(rewards, G, self.args.scale_rewards)

        metrics = self._metrics[mode]
        for name, value in rollout_stats(rollouts, scores).items():
            metrics[name].append(float(self.accelerator.gather(torch.tensor(value, device=device)).mean()))
        metrics["reward_std"].append(float(rewards.view(-1, G).std(1).mean()))
        metrics["frac_reward_zero_std"].append(float(self.accelerator.gather(zero_std.float()).mean()))
        metrics["zero_variance_groups"].append(float(self.accelerator.gather(zero_std.float()).sum()))
        kept = list(zip(rollouts, scores["total"]))[: self.sample_count]
        self.samples = [transcript(r.to_trajectory(), t) for r, t in kept]
        batch = pack_rollouts(rollouts, self.encoder, device)
        batch["advantages"] = advantages
        batch["num_items_in_batch"] = self.accelerator.gather(batch["tool_mask"].sum()).sum()
        if self.beta != 0.0:
            batch["ref_per_token_logps"] = self.reference_logps(batch)
        return batch

    def reference_logps(self, batch: dict[str, Any]):
        from trl.trainer.grpo_trainer import use_adapter

        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        keys = ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids")
        kwargs = {k: batch[k] for k in keys if k in batch}
        length, batch_size = batch["completion_ids"].size(1), self.args.per_device_train_batch_size
        with torch.no_grad():
            if self.ref_model is not None:
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.ref_model, ids, mask, length, batch_size=batch_size, **kwargs
                )
                return logps
            model = self.accelerator.unwrap_model(self.model)  # LoRA: the reference is the adapter disabled
            with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, length, batch_size=batch_size, **kwargs
                )
                return logps
