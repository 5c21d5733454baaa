"""`PerceptionTrainer`: TRL's SFTTrainer with perception pretraining's auxiliary losses.

Imports TRL at module level, so `videor4.train.pretrain` imports it only when a trainer is
built (`pretrain._trainer_class`); the losses themselves live there.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from videor4.policy.encoding import IGNORE_INDEX
from videor4.policy.model import vision_tower
from videor4.train.pretrain import (
    ATTENTION_HEADS,
    DENSE_LABELS,
    HEAD_ATTRIBUTE,
    attention_loss,
    continuation_loss,
    dense_losses,
)


class PerceptionTrainer(SFTTrainer):
    """SFTTrainer whose loss adds the dense heads' cross-entropies on the vision tower's merged tokens
    and the LOCATE attention loss."""

    def __init__(
        self,
        *args,
        dense_loss_weight: float = 1.0,
        attention_loss_weight: float = 1.0,
        attention_layer: int = 2,
        continuation_weight: float = 0.1,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.dense_loss_weight, self.attention_loss_weight = dense_loss_weight, attention_loss_weight
        self.attention_layer = attention_layer
        self.continuation_weight = continuation_weight
        self._aux: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = {key: inputs.pop(key) for key in DENSE_LABELS}
        targets = {name: inputs.pop(name) for name in ATTENTION_HEADS}
        continuation = inputs.pop("continuation_labels")
        if self.attention_loss_weight > 0:
            inputs["output_attentions"] = True
        unwrapped = self.accelerator.unwrap_model(model)
        captured: dict[str, Any] = {}
        hooks = self._capture_hooks(unwrapped, captured)
        try:
            loss = super().compute_loss(
                model, inputs, return_outputs=False, num_items_in_batch=num_items_in_batch
            )
        finally:
            for hook in hooks:
                hook.remove()
        tokens = captured["tokens"]
        if not tokens.requires_grad and model.training:
            raise RuntimeError(
                "the vision tower's tokens carry no gradient: the dense losses would not train it"
            )
        if tokens.shape[0] != labels["glyph_labels"].shape[0]:
            raise RuntimeError(
                f"{tokens.shape[0]} merged visual tokens but {labels['glyph_labels'].shape[0]} glyph labels"
            )
        heads = getattr(unwrapped, HEAD_ATTRIBUTE)
        losses = dense_losses(heads(tokens, unwrapped.get_input_embeddings().weight), labels)
        loss = loss + self.dense_loss_weight * sum(losses.values())
        if self.attention_loss_weight > 0:
            losses["attention"] = attention_loss(captured["attentions"], self.attention_layer, targets)
            loss = loss + self.attention_loss_weight * losses["attention"]
        if self.continuation_weight > 0 and (continuation != IGNORE_INDEX).any():
            losses["continuation"] = continuation_loss(captured["hidden"], continuation, unwrapped.lm_head)
            loss = loss + self.continuation_weight * losses["continuation"]
        for name, value in losses.items():
            self._aux.setdefault(name.replace("_labels", "") + "_loss", []).append(float(value.detach()))
        if return_outputs:
            raise ValueError(
                "PerceptionTrainer computes its loss only; it does not return the model's outputs"
            )
        return loss

    def _capture_hooks(self, unwrapped, captured: dict[str, Any]) -> list:
        """Forward hooks that keep, in `captured`, what the one forward with gradients saw: the vision
        tower's merged tokens and, as the losses need them, the language model's attention weights and
        last hidden states.  (Asking TRL for its outputs instead would run a second, gradient-free
        forward, and losses on it would train nothing.)  The caller removes them."""

        def keep(name: str, field: str):
            def hook(module, args, out) -> None:  # returning None leaves the output as it is
                captured.setdefault(name, getattr(out, field))

            return hook

        hooks = [vision_tower(unwrapped).register_forward_hook(keep("tokens", "pooler_output"))]
        if self.attention_loss_weight > 0:
            hook = keep("attentions", "attentions")
            hooks.append(unwrapped.model.language_model.register_forward_hook(hook))
        if self.continuation_weight > 0:  # TRL's fused LM head never calls lm_head: keep the hidden states
            hook = keep("hidden", "last_hidden_state")
            hooks.append(unwrapped.model.language_model.register_forward_hook(hook))
        return hooks

    def log(self, logs, start_time=None):
        if "loss" in logs:
            for name, values in self._aux.items():
                if values:
                    logs[name] = sum(values) / len(values)
                    values.clear()
        super().log(logs, start_time)
