"""Generating from a policy: single turns, and the batched multi-turn rumination engine.

`RolloutEngine` runs whole rumination rollouts — turn, tool call, observation,
turn, … — for many rollouts at once; RL, evaluation, the SFT stages' format
check and the CLI share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from videor4.core.params import fill, section
from videor4.policy.encoding import IGNORE_INDEX, IMAGE_TYPE_ID, Encoded, EncodingError, PolicyEncoder
from videor4.policy.model import END_OF_TURN, VISION_PLACEHOLDERS
from videor4.rumination.protocol import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ParsedTurn, count_boxed, parse_turn
from videor4.rumination.tools import RuminationEnv

if TYPE_CHECKING:
    from videor4.rumination.trajectory import Step, Trajectory


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
    reuse_cache: bool = True  # keep each rollout's KV cache between turns (memory for speed)
    # Evaluation: once the tool budget is spent the tool-call tokens are banned, so the next turn
    # must answer from what was seen (budget 0 = single pass).  Off: a call past the budget ends
    # the rollout unanswered, as in training.
    force_answer: bool = False


@dataclass
class Op:
    """One tool call of a rollout, as executed, with the pixels that rewards read (its lasting
    form is a trajectory `Step`: `Rollout.to_trajectory`)."""

    tool: str | None  # None: the turn tried to call a tool and the call did not parse
    arguments: dict[str, Any] | None
    text: str  # the observation text
    error: str | None
    regions: list[tuple[int, tuple[float, float, float, float]]]  # (shown-frame position, normalized region)
    images: list[Any]  # the images the call returned


@dataclass
class KVState:
    """A rollout's KV cache between turns: per layer (keys, values) of shape 1 × heads × length × dim,
    covering the first `length` tokens and `images` images of its sequence."""

    layers: list[tuple[Any, Any]] | None = None
    length: int = 0
    images: int = 0
    next_pos: int = 0  # the rotary position of the next text token

    def cache(self):
        """A fresh `DynamicCache` over these tensors (the model appends to its copy, never to ours)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=self.layers) if self.layers else DynamicCache()

    @classmethod
    def of(cls, cache, length: int, images: int, next_pos: int) -> "KVState":
        return cls([(layer.keys, layer.values) for layer in cache.layers], length, images, next_pos)

    def extend(self, batch_cache, row: int, start: int, stop: int, fed: int) -> "KVState":
        """This rollout's row of a batched cache (columns start:stop), after `fed` more tokens."""
        layers = [
            (
                layer.keys[row : row + 1, :, start:stop].clone(),
                layer.values[row : row + 1, :, start:stop].clone(),
            )
            for layer in batch_cache.layers
        ]
        return KVState(layers, self.length + fed, self.images, self.next_pos + fed)


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
    finish_reason: str | None = (
        None  # answer | no_answer | max_tool_calls | max_images | token_budget | truncated
    )
    kv: KVState | None = field(
        default=None, repr=False
    )  # the engine's cache; only valid for the weights that made it

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

    def step(self, i: int) -> Step:
        """Turn i (0-based) and the call it made, ops[i], as a trajectory step (turn i made
        ops[i]: a turn that made no executed call ended the rollout)."""
        from videor4.rumination.protocol import ToolCall
        from videor4.rumination.trajectory import Step, image_digest

        op, text = self.ops[i], self.turns[i]
        call = ToolCall(op.tool, dict(op.arguments or {})) if op.tool is not None else None
        digests = [image_digest(im) for im in op.images]
        return Step(parse_turn(text).thought, call, op.text, [], digests, op.error, text=text)

    def to_trajectory(self, traj_id: str | None = None) -> Trajectory:
        """The rollout in the format synthesis writes: replayable against its video (observation
        images as sha256s only), with the turns as written and how it finished (no tensors)."""
        from videor4.core.schema import Sample
        from videor4.rumination.trajectory import ROLLOUT_KIND, Trajectory

        sample = Sample.from_dict(self.sample)
        final = self.turns[-1] if len(self.turns) > len(self.ops) else None  # the turn that made no call
        return Trajectory(
            traj_id=traj_id or sample.sample_id,
            sample_id=sample.sample_id,
            kind=ROLLOUT_KIND,
            video=sample.frame_source(),
            frame_indices=list(self.env.video.indices),
            num_source_frames=self.env.video.num_source_frames,
            question=sample.prompt_question(),
            answers=list(sample.answers),
            problem_type=sample.problem_type,
            options=sample.options,
            vision=self.env.vision.to_dict(),
            steps=[self.step(i) for i in range(len(self.ops))],
            final_thought=parse_turn(final).thought if final is not None else "",
            final_answer=self.answer,
            final_text=final,
            finish_reason=self.finish_reason,
            max_images=self.env.max_images,
        )


def _single_token_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    """The ids of those `tokens` the tokenizer has as single tokens (the others are left out)."""
    ids = (tokenizer.convert_tokens_to_ids(t) for t in tokens)
    return [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]


class RolloutEngine:
    """Advances many rollouts together: each round decodes one assistant turn for every live
    rollout in batches, executes the tool calls with the shared ops, appends the observations
    (text + re-encoded images) and drops finished rollouts from the batch.

    Token ids are kept exactly as sampled, so the trainer's forward pass sees the same
    sequence the policy produced; observations are appended as template-rendered tokens.

    Generation is one narrow seam, `decode_turns(rollouts) -> [(token ids, logprobs)]`: one
    assistant turn per rollout, given its `input_ids` so far and its images (`pixel_values`,
    `image_grid_thw`; the PIL images are `messages`' image parts), ending at a stop id
    (`stop_ids`) or cut at the budget.  Everything else (parsing, executing tools, encoding
    observations, limits) stays here.  The default decodes in-process with the policy and
    per-rollout KV caches; a serving engine such as vLLM can be passed in instead (README,
    "Scale-out").
    """

    def __init__(
        self,
        model,
        encoder: PolicyEncoder,
        settings: RolloutSettings,
        decode_turns: Callable[[Sequence[Rollout]], list[tuple[list[int], list[float]]]] | None = None,
    ) -> None:
        self.model, self.encoder, self.settings = model, encoder, settings
        self.decode_turns = decode_turns or self._decode
        tok = encoder.tokenizer
        self.call_close_id = tok.convert_tokens_to_ids(TOOL_CALL_CLOSE)
        # the tokens that start (or, stray, attempt) a tool call: banned once a forced answer is due;
        # a tokenizer without them as single tokens ends over-budget rollouts instead
        self.tool_token_ids = _single_token_ids(tok, (TOOL_CALL_OPEN, TOOL_CALL_CLOSE))
        # the vision placeholders belong to observations the env inserts: sampled, one would ask the
        # trainer's forward pass for image features no image has ("tokens: 97, features: 96")
        self.vision_token_ids = _single_token_ids(tok, VISION_PLACEHOLDERS)
        self.stop_ids = [encoder.end_of_turn_id] + (
            [self.call_close_id] if isinstance(self.call_close_id, int) else []
        )
        # multimodal RoPE positions (Qwen2-VL family); text-only models count tokens
        self._rope_index = next(
            (m.get_rope_index for m in model.modules() if hasattr(m, "get_rope_index")), None
        )

    # ------------------------------------------------------------ starting
    def start(self, sample: dict[str, Any], env: RuminationEnv, prompt_id: int) -> Rollout:
        from videor4.core.schema import Sample
        from videor4.rumination.trajectory import prompt_messages

        messages = prompt_messages(
            Sample.from_dict(sample).prompt_question(), env.initial_images(), env.vision.max_frames_per_clip
        )
        enc = self.encoder.encode_prompt(messages)
        pixels, grids = _split_pixels(enc.pixel_values, enc.image_grid_thw)
        n = len(enc.input_ids)
        r = Rollout(
            prompt_id, sample, env, messages, list(enc.input_ids), [0] * n, [0.0] * n, pixels, grids, n
        )
        if n >= self.settings.max_total_tokens:
            r.finish_reason = "token_budget"  # the prompt alone fills the budget
        return r

    # ------------------------------------------------------------ running
    def run(
        self, rollouts: Sequence[Rollout], on_turn: Callable[[Rollout], None] | None = None
    ) -> list[Rollout]:
        """Run every rollout to its end; `on_turn(rollout)` is called after each turn is acted on
        (its text is `turns[-1]`; when it called a tool, `ops[-1]` is that call)."""
        rollouts = list(rollouts)
        while True:
            live = [r for r in rollouts if not r.done]
            if not live:
                return rollouts
            for start in range(0, len(live), self.settings.batch_size):
                chunk = live[start : start + self.settings.batch_size]
                for r, (ids, logps) in zip(chunk, self.decode_turns(chunk), strict=True):
                    self._advance(r, ids, logps)
                    if r.done:
                        r.kv = None
                    if on_turn is not None:
                        on_turn(r)

    def _decode(self, chunk: Sequence[Rollout]) -> list[tuple[list[int], list[float]]]:
        """One sampled assistant turn per rollout: (token ids, their log-probabilities).

        Each rollout keeps its KV cache across turns, so a round only prefills what is new
        since the last one (the observation and its images); the G rollouts of a prompt
        share one prefill of the prompt. Decoding then runs the chunk as one batch."""
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                first = self._prefill(chunk)
                return self._sample_batch(chunk, first)
        finally:
            self.model.train(was_training)
            if not self.settings.reuse_cache:
                for r in chunk:
                    r.kv = None

    def _device(self):
        return next(self.model.parameters()).device

    def _positions(self, r: Rollout):
        """Rotary positions of the whole sequence (3 × 1 × N for multimodal RoPE), and the next text
        position."""
        import torch

        ids = torch.tensor([r.input_ids], dtype=torch.long)
        if self._rope_index is None:
            pos = torch.arange(ids.shape[1]).view(1, 1, -1)
            return pos, ids.shape[1]
        types = (ids == self.encoder.image_token_id).long() * IMAGE_TYPE_ID
        grids = torch.stack(r.image_grid_thw) if r.image_grid_thw else None
        pos, _ = self._rope_index(input_ids=ids, mm_token_type_ids=types, image_grid_thw=grids)
        return pos, int(pos.max()) + 1

    def _prefill(self, chunk: Sequence[Rollout]):
        """Run each rollout's uncached tokens through the model; returns the last position's logits (B ×
        V)."""
        import torch

        device = self._device()
        shared: dict[tuple, tuple[KVState, Any]] = {}
        rows = []
        for r in chunk:
            state = r.kv or KVState()
            key = (id(state.layers), state.length, tuple(r.input_ids[state.length :]))
            hit = shared.get(key)
            if hit is not None and _same_images(r, hit[2]):
                r.kv = hit[0]
                rows.append(hit[1])
                continue
            pos, next_pos = self._positions(r)
            ids = torch.tensor([r.input_ids[state.length :]], dtype=torch.long, device=device)
            kwargs: dict[str, Any] = {}
            new_images = r.pixel_values[state.images :]
            if new_images:
                kwargs["pixel_values"] = torch.cat(new_images).to(device=device, dtype=self.model.dtype)
                kwargs["image_grid_thw"] = torch.stack(r.image_grid_thw[state.images :]).to(device)
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones((1, len(r.input_ids)), dtype=torch.long, device=device),
                position_ids=pos[..., state.length :].to(device),
                past_key_values=state.cache(),
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
            r.kv = KVState.of(out.past_key_values, len(r.input_ids), len(r.pixel_values), next_pos)
            rows.append(out.logits[0, -1])
            shared[key] = (r.kv, rows[-1], r)
        return torch.stack(rows).float()

    def _sample_batch(self, chunk: Sequence[Rollout], first_logits) -> list[tuple[list[int], list[float]]]:
        """Decode the chunk together from its cached states: the caches are left-padded into one
        batch, and a rollout leaves the batch (keeping its cache) as soon as its turn ends."""
        import torch

        s, device = self.settings, self._device()
        states = [r.kv for r in chunk]
        width = max(st.length for st in states)
        budgets = [max(1, min(s.max_new_tokens, s.max_total_tokens - len(r.input_ids))) for r in chunk]
        cache, attention = _batch_cache(states, width, max(budgets), device)
        banned = None
        if s.force_answer and self.tool_token_ids:
            banned = torch.tensor([len(r.ops) >= s.max_tool_calls for r in chunk], device=device)
        tokens, logps = _sample(*self._mask(first_logits, banned), s.temperature, s.top_p)
        ids = [[t] for t in tokens.tolist()]
        lps = [[lp] for lp in logps.tolist()]
        live = list(range(len(chunk)))  # batch row -> chunk index
        step = 0
        while True:
            keep = []
            for row, i in enumerate(live):
                if ids[i][-1] in self.stop_ids or len(ids[i]) >= budgets[i]:
                    fed = len(ids[i]) - 1  # the last token has not been through the model yet
                    st = states[i]
                    chunk[i].kv = st.extend(cache, row, width - st.length, width + fed, fed)
                else:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention = attention[index]
                banned = banned[index] if banned is not None else None
                live = [live[row] for row in keep]
            attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=1)
            feed = torch.tensor([[ids[i][-1]] for i in live], dtype=torch.long, device=device)
            pos = (
                torch.tensor([states[i].next_pos + step for i in live], device=device)
                .view(1, -1, 1)
                .expand(3, -1, -1)
            )
            out = self.model(
                input_ids=feed,
                attention_mask=attention,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            )
            tokens, logps = _sample(*self._mask(out.logits[:, -1].float(), banned), s.temperature, s.top_p)
            for i, t, lp in zip(live, tokens.tolist(), logps.tolist()):
                ids[i].append(t)
                lps[i].append(lp)
            step += 1
        return list(zip(ids, lps))

    def _mask(self, logits, banned):
        """(the logits to sample from, the logits to score the sample by): the tool-call tokens are
        impossible in the rows `banned` marks, in both; the vision placeholders in the first only, so
        the recorded log-probabilities stay what the trainer's forward pass recomputes."""
        scored = _ban(logits, banned, self.tool_token_ids) if banned is not None else logits
        if not self.vision_token_ids:
            return scored, scored
        return _ban(scored, slice(None), self.vision_token_ids), scored

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
        r.ops.append(
            Op(
                call.name if call else None,
                call.arguments if call else None,
                obs.text,
                obs.error,
                list(obs.regions),
                list(obs.images),
            )
        )
        self._append_observation(r, text, obs)
        if len(r.input_ids) >= s.max_total_tokens:
            r.finish_reason = "token_budget"
        elif s.max_images and len(r.env.seen) >= s.max_images:
            r.finish_reason = "max_images"

    def _append_observation(self, r: Rollout, text: str, obs: Any) -> None:
        """Add the assistant turn and the tool's observation to the conversation, and the tokens and
        images the chat template puts between that turn and the next assistant header."""
        enc = self.encoder
        assistant = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        tool = {
            "role": "tool",
            "content": [{"type": "text", "text": obs.text}]
            + [{"type": "image", "image": im} for im in obs.images],
        }
        base = enc.render(r.messages + [assistant])
        full = enc.render(r.messages + [assistant, tool], add_generation_prompt=True)
        if not full.startswith(base):
            raise EncodingError("template", "the chat template is not prefix-stable")
        # what the template writes after the assistant's end-of-turn token, then the tool turn and the
        # next header
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


def _ban(logits, rows, token_ids: list[int]):
    """`logits` with `token_ids` impossible in the rows marked True (or a slice of rows)."""
    logits = logits.clone()
    for token_id in token_ids:
        logits[rows, token_id] = float("-inf")
    return logits


def _sample(logits, scored, temperature: float, top_p: float):
    """Tokens sampled from B × V logits at `temperature` within nucleus `top_p` (greedy at 0), and their
    log-probabilities under `scored`'s tempered distribution before the nucleus cut: what the trainer
    recomputes."""
    import torch

    if temperature <= 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(scored, -1).gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, -1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    tokens = torch.multinomial(probs, 1).squeeze(-1)
    if scored is not logits:
        logp = torch.log_softmax(scored / temperature, -1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _batch_cache(states: Sequence[KVState], width: int, capacity: int, device):
    """Left-pad per-rollout caches to `width` into one batched cache with room for `capacity`
    more tokens (written in place: no re-concatenation per decoded token), and its attention mask."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, keys, values, length: int) -> None:
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.buffers, self.length = (keys, values), length
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

        def update(self, key_states, value_states, *args, **kwargs):
            keys, values = self.buffers
            end = self.length + key_states.shape[-2]
            keys[:, :, self.length : end] = key_states
            values[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            self.buffers = tuple(b[indices] for b in self.buffers)
            self.keys, self.values = (
                self.buffers[0][:, :, : self.length],
                self.buffers[1][:, :, : self.length],
            )

    layers = []
    for li in range(len(states[0].layers)):
        k0 = states[0].layers[li][0]
        keys = k0.new_zeros((len(states), k0.shape[1], width + capacity, k0.shape[3]))
        values = torch.zeros_like(keys)
        for b, st in enumerate(states):
            keys[b, :, width - st.length : width] = st.layers[li][0][0]
            values[b, :, width - st.length : width] = st.layers[li][1][0]
        layers.append(PreallocatedLayer(keys, values, width))
    cache = DynamicCache()
    cache.layers = layers
    attention = torch.zeros((len(states), width), dtype=torch.long, device=device)
    for b, st in enumerate(states):
        attention[b, width - st.length :] = 1
    return cache, attention


def _same_images(a: Rollout, b: Rollout) -> bool:
    import torch

    return len(a.pixel_values) == len(b.pixel_values) and all(
        x is y or torch.equal(x, y) for x, y in zip(a.pixel_values, b.pixel_values)
    )


def _split_pixels(pixel_values, grids) -> tuple[list[Any], list[Any]]:
    """Per-image chunks of a processor's concatenated patches."""
    if pixel_values is None:
        return [], []
    sizes = [int(g.prod()) for g in grids]
    return list(pixel_values.split(sizes)), [g.clone() for g in grids]


def start_group(
    engine: RolloutEngine, sample: dict[str, Any], vision, group_size: int, prompt_id: int
) -> list[Rollout]:
    """G rollouts of one prompt, each with its own environment over the same (cached) frames."""
    from videor4.rumination.trajectory import sample_env

    return [
        engine.start(sample, sample_env(sample, vision, max_images=engine.settings.max_images), prompt_id)
        for _ in range(group_size)
    ]


def ruminate(
    policy,
    sample: dict[str, Any],
    env: RuminationEnv,
    settings: RolloutSettings,
    on_turn: Callable[[Rollout], None] | None = None,
) -> Rollout:
    """One rumination rollout of `policy` (a `Policy`) on `sample` in `env`, run to its end; `on_turn`
    as in `RolloutEngine.run`.  What `video-r4 ask` and a registered MLflow model answer with."""
    engine = RolloutEngine(policy.model, PolicyEncoder(policy.tokenizer, policy.image_processor), settings)
    rollout = engine.start(sample, env, 0)
    engine.run([rollout], on_turn=on_turn)
    return rollout


def rollout_limits(params: dict[str, Any]) -> RolloutSettings:
    """`rollout:` limits shared by data synthesis, RL and evaluation."""
    return fill(RolloutSettings, section(params, "rollout"), "rollout")
