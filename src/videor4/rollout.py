"""Generating assistant turns from a policy.

`generate_turns` is one batched decoding round over many conversations; the
multi-turn rumination engine calls it once per round, and the SFT stages use it
to measure how often the model's first turn is well formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .encoding import PolicyEncoder
from .protocol import ParsedTurn, count_boxed, parse_turn


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 8


def generate_turns(
    model,
    encoder: PolicyEncoder,
    conversations: Sequence[Sequence[dict[str, Any]]],
    settings: GenerationSettings,
) -> list[str]:
    """The next assistant turn of each conversation, decoded to text (end-of-turn stripped)."""
    import torch

    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(conversations), settings.batch_size):
            chunk = conversations[start : start + settings.batch_size]
            batch = encoder.collate([encoder.encode_prompt(c) for c in chunk], padding_side="left")
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            sample = settings.temperature > 0
            kwargs: dict[str, Any] = {"do_sample": sample}
            if sample:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=settings.max_new_tokens,
                    eos_token_id=encoder.end_of_turn_id,
                    pad_token_id=encoder.pad_token_id,
                    **kwargs,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            texts += encoder.tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return texts


def is_well_formed(turn: ParsedTurn) -> bool:
    """A turn that either makes one valid tool call or gives exactly one `\\boxed{}` answer."""
    if turn.tool_call is not None:
        return True
    return turn.call_error is None and turn.answer is not None and count_boxed(turn.text) == 1


def format_valid_rate(texts: Sequence[str]) -> float:
    return sum(is_well_formed(parse_turn(t)) for t in texts) / max(len(texts), 1)
