"""Generating from a policy: single turns, and the batched multi-turn rumination engine.

`RolloutEngine` runs whole rumination rollouts — turn, tool call, observation,
turn, … — for many rollouts at once; RL, evaluation, the SFT stages' format
check and the CLI share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .encoding import IGNORE_INDEX, EncodingError, Encoded, PolicyEncoder
from .model import END_OF_TURN
from .ops import RuminationEnv
from .protocol import TOOL_CALL_CLOSE, ParsedTurn, count_boxed, parse_turn


def is_well_formed(turn: ParsedTurn) -> bool:
    """A turn that either makes one valid tool call or gives exactly one `\\boxed{}` answer."""
    if turn.tool_call is not None:
        return True
    return turn.call_error is None and turn.answer is not None and count_boxed(turn.text) == 1


def format_valid_rate(texts: Sequence[str]) -> float:
    return sum(is_well_formed(parse_turn(t)) for t in texts) / max(len(texts), 1)


# ---------------------------------------------------------------- the multi-turn engine
@dataclass
class RolloutSettings:
    """Limits and sampling of a rumination rollout (`rollout:` in params.yaml)."""

    max_tool_calls: int = 5
    max_images: int = 16
    max_new_tokens: int = 256  # per assistant turn
    max_total_tokens: int = 8192  # the whole rollout: prompt, turns and observations
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 0.95
    batch_size: int = 16  # rollouts decoded together


@dataclass
class Op:
    """One tool call of a rollout, as executed."""

    tool: str | None  # None: the turn tried to call a tool and the call did not parse
    arguments: dict[str, Any] | None
    error: str | None
    regions: list[tuple[int, tuple[float, float, float, float]]]  # (shown-frame position, normalized region)
    images: list[Any]  # the images the call returned


@dataclass
class Rollout:
    """One multi-turn rollout: its token sequence (what the policy wrote is marked), images and ops."""

    prompt_id: int
    sample: dict[str, Any]
    env: RuminationEnv
    messages: list[dict[str, Any]]
    input_ids: list[int]
    completion_mask: list[int]  # 1 on tokens the policy generated
    logprobs: list[float]  # sampling-time log-probabilities, aligned with input_ids (0 where not generated)
    pixel_values: list[Any]  # one tensor per image, in order
    image_grid_thw: list[Any]
    prompt_length: int
    turns: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    answer: str | None = None
    finish_reason: str | None = None  # answer | no_answer | max_tool_calls | max_images | token_budget | truncated

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def num_generated(self) -> int:
        return sum(self.completion_mask)

    def calls(self, tool: str | None = None) -> int:
        return sum(1 for op in self.ops if tool is None or op.tool == tool)

    @property
    def invalid_calls(self) -> int:
        return sum(1 for op in self.ops if op.error is not None)

    def encoded(self) -> Encoded:
        """The sequence so far as the shared encoder's unit (for batching; labels follow the mask)."""
        import torch

        labels = [t if m else IGNORE_INDEX for t, m in zip(self.input_ids, self.completion_mask)]
        pixels = torch.cat(self.pixel_values) if self.pixel_values else None
        grids = torch.stack(self.image_grid_thw) if self.image_grid_thw else None
        return Encoded(self.input_ids, labels, pixels, grids, len(self.pixel_values))

    def summary(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "sample_id": self.sample.get("sample_id"),
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "turns": list(self.turns),
            "ops": [{"tool": o.tool, "arguments": o.arguments, "error": o.error, "regions": o.regions} for o in self.ops],
            "generated_tokens": self.num_generated,
            "total_tokens": len(self.input_ids),
        }


class RolloutEngine:
    """Advances many rollouts together: each round decodes one assistant turn for every live
    rollout in batches, executes the tool calls with the shared ops, appends the observations
    (text + re-encoded images) and drops finished rollouts from the batch.

    Token ids are kept exactly as sampled, so the trainer's forward pass sees the same
    sequence the policy produced; observations are appended as template-rendered tokens.
    """

    def __init__(self, model, encoder: PolicyEncoder, settings: RolloutSettings) -> None:
        self.model, self.encoder, self.settings = model, encoder, settings
        tok = encoder.tokenizer
        self.call_close_id = tok.convert_tokens_to_ids(TOOL_CALL_CLOSE)
        self.stop_ids = [encoder.end_of_turn_id] + ([self.call_close_id] if isinstance(self.call_close_id, int) else [])

    # ------------------------------------------------------------ starting
    def start(self, sample: dict[str, Any], env: RuminationEnv, prompt_id: int) -> Rollout:
        from .data.schema import Sample
        from .trajectory import prompt_messages

        messages = prompt_messages(Sample.from_dict(sample).prompt_question(), env.initial_images())
        enc = self.encoder.encode_prompt(messages)
        pixels, grids = _split_pixels(enc.pixel_values, enc.image_grid_thw)
        n = len(enc.input_ids)
        r = Rollout(prompt_id, sample, env, messages, list(enc.input_ids), [0] * n, [0.0] * n, pixels, grids, n)
        if n >= self.settings.max_total_tokens:
            r.finish_reason = "token_budget"  # the prompt alone fills the budget
        return r

    # ------------------------------------------------------------ running
    def run(self, rollouts: Sequence[Rollout]) -> list[Rollout]:
        rollouts = list(rollouts)
        while True:
            live = [r for r in rollouts if not r.done]
            if not live:
                return rollouts
            for start in range(0, len(live), self.settings.batch_size):
                chunk = live[start : start + self.settings.batch_size]
                for r, (ids, logps) in zip(chunk, self._decode(chunk)):
                    self._advance(r, ids, logps)

    def _decode(self, chunk: Sequence[Rollout]) -> list[tuple[list[int], list[float]]]:
        """One sampled assistant turn per rollout: (token ids, their log-probabilities)."""
        import torch

        s = self.settings
        batch = self.encoder.collate([r.encoded() for r in chunk], padding_side="left")
        batch.pop("labels")
        width = batch["input_ids"].shape[1]
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        budget = max(1, min(s.max_new_tokens, max(s.max_total_tokens - len(r.input_ids) for r in chunk)))
        sample = s.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=budget,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.encoder.pad_token_id,
                    output_logits=True,
                    return_dict_in_generate=True,
                    **kwargs,
                )
        finally:
            self.model.train(was_training)
        new = out.sequences[:, width:]
        # log-probabilities under the sampling temperature, before top-p filtering: what the trainer recomputes
        logits = torch.stack(out.logits, dim=1).float()
        if sample:
            logits = logits / s.temperature
        logps = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        results = []
        for row in range(len(chunk)):
            ids = new[row].tolist()
            end = next((i + 1 for i, t in enumerate(ids) if t in self.stop_ids), len(ids))
            results.append((ids[:end], logps[row, :end].tolist()))
        return results

    def force_turn(self, r: Rollout, text: str) -> Rollout:
        """Append an assistant turn that the policy did not write (masked from any loss) and act on it,
        as if it had been sampled: scripted calls for tests, ablations and the CLI."""
        ids = self.encoder.tokenizer(text + END_OF_TURN, add_special_tokens=False)["input_ids"]
        self._advance(r, ids, [0.0] * len(ids), generated=False)
        return r

    def _advance(self, r: Rollout, ids: list[int], logps: list[float], generated: bool = True) -> None:
        s, enc = self.settings, self.encoder
        r.input_ids += ids
        r.completion_mask += [int(generated)] * len(ids)
        r.logprobs += logps
        stopped = bool(ids) and ids[-1] in self.stop_ids
        if stopped and ids[-1] == self.call_close_id:
            # the turn ends at its tool call; close it as the chat format does (not the policy's token)
            r.input_ids.append(enc.end_of_turn_id)
            r.completion_mask.append(0)
            r.logprobs.append(0.0)
        text = enc.tokenizer.decode(ids, skip_special_tokens=True)
        r.turns.append(text)
        turn = parse_turn(text)
        if not stopped:
            r.finish_reason = "token_budget" if len(r.input_ids) >= s.max_total_tokens else "truncated"
            return
        if not turn.wants_tool:
            r.answer = turn.answer
            r.finish_reason = "answer" if turn.answer is not None else "no_answer"
            return
        if len(r.ops) >= s.max_tool_calls:
            r.finish_reason = "max_tool_calls"
            return
        obs = r.env.step(turn)
        call = turn.tool_call
        r.ops.append(Op(call.name if call else None, call.arguments if call else None, obs.error, list(obs.regions), list(obs.images)))
        assistant = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        tool = {"role": "tool", "content": [{"type": "text", "text": obs.text}] + [{"type": "image", "image": im} for im in obs.images]}
        base = enc.render(r.messages + [assistant])
        full = enc.render(r.messages + [assistant, tool], add_generation_prompt=True)
        if not full.startswith(base):
            raise EncodingError("template", "the chat template is not prefix-stable")
        # what the template writes after the assistant's end-of-turn token, then the tool turn and the next header
        after_turn = base[base.rindex(END_OF_TURN) + len(END_OF_TURN) :]
        pixels, grids, counts = enc.process_images(obs.images)
        obs_ids = enc.tokenize(after_turn + full[len(base) :], counts)
        r.messages += [assistant, tool]
        r.input_ids += obs_ids
        r.completion_mask += [0] * len(obs_ids)
        r.logprobs += [0.0] * len(obs_ids)
        if pixels is not None:
            p, g = _split_pixels(pixels, grids)
            r.pixel_values += p
            r.image_grid_thw += g
        if len(r.input_ids) >= s.max_total_tokens:
            r.finish_reason = "token_budget"
        elif s.max_images and len(r.env.seen) >= s.max_images:
            r.finish_reason = "max_images"


def _split_pixels(pixel_values, grids) -> tuple[list[Any], list[Any]]:
    """Per-image chunks of a processor's concatenated patches."""
    if pixel_values is None:
        return [], []
    sizes = [int(g.prod()) for g in grids]
    return list(pixel_values.split(sizes)), [g.clone() for g in grids]


def start_group(engine: RolloutEngine, sample: dict[str, Any], vision, group_size: int, prompt_id: int) -> list[Rollout]:
    """G rollouts of one prompt, each with its own environment over the same (cached) frames."""
    from .trajectory import sample_env

    return [engine.start(sample, sample_env(sample, vision, max_images=engine.settings.max_images), prompt_id) for _ in range(group_size)]
