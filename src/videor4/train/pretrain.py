"""Perception pretraining (stage `pretrain`): teach a base that cannot read to read once zoomed
and to say where a named thing is, on TRL's SFTTrainer.

Examples are rendered on the fly by the synthetic generator (`videor4.data.perception`), from a
seed stream no video uses, so the stage sees as many distinct scenes as it has steps.  The
answers are what the policy later says in its trajectories (`It reads "917".`, `The red sign is
at [...]`).  The loss is TRL's answer-only loss plus auxiliary ones that let a randomly
initialised tiny model learn in minutes what a real base brings (docs/DESIGN.md §8):
- dense heads on the vision tower's merged tokens (`dense_loss_weight`, `PerceptionHeads`):
  the glyph in each 28x28 cell, classified by the language model's own (tied) embedding of the
  character, so a token showing a "7" looks like the text token "7" and reading becomes copying;
  the glyph's place in the asked text (slot), so the k-th character is found by content; and,
  on LOCATE's low-resolution frames, the colour word and the box (tied to the coordinate
  tokens) of the text centred in each cell, since the vision tower has no absolute positions
  of its own;
- an attention loss (`attention_loss_weight`): on LOCATE, head 0 of `attention_layer` is taught
  to look at the asked text's centre cell while the box is written.  Without it the language
  model copies some panel's box, not the one the question names.
The heads only exist during training; the saved checkpoint is an ordinary Qwen2.5-VL one.

`PretrainSettings` is the config (params `pretrain:`), `pretrain` runs it, `perception_metrics`
scores a checkpoint on held-out renders: `read_acc` (zoomed), `read_lowres_acc` (the same
questions on the low-resolution view), `read_mc_acc` (zoomed, multiple choice: the right
option's letter), `read_clip_acc` (captions in a clipped frame), `locate_cover` (share of
predicted boxes whose crop, widened by the margin, covers >= 90 % of the text's box) and
`locate_clip_cover` (the same in a clipped frame).  Beside them: `<read task>_answer_acc`, the
share whose boxed answer is the text (the reading copied into the answer), and
`<locate task>_named_acc`, the share whose phrase names the asked panel (a box at another text
after the right name fails at finding, not at naming).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from videor4.core.launch import world_size
from videor4.core.params import fill, section
from videor4.core.scoring import normalize_answer
from videor4.core.statistics import wilson
from videor4.data.evidence import box_area, crop_covers
from videor4.data.perception import (
    COLOURS,
    GLYPH_CLASSES,
    HELD_OUT_STREAM,
    HELD_OUT_TASKS,
    LOCATE_TASKS,
    NO_SLOT,
    READ_TASKS,
    TASKS,
    TRAIN_STREAM,
    PerceptionExample,
    make_example,
    task_of,
)
from videor4.data.synthetic import SyntheticConfig
from videor4.policy.encoding import IGNORE_INDEX, PolicyEncoder
from videor4.policy.model import TINY, ModelConfig, count_parameters, load_policy, prepare_for_training
from videor4.rumination.protocol import extract_boxed, phrase_box, phrase_reading, phrase_thing
from videor4.rumination.tools import VisionConfig
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

HEAD_ATTRIBUTE = "perception_heads"  # the training-only heads, removed before the final save
AUX_LOSSES = ("glyph_loss", "slot_loss", "colour_loss", "coord_loss", "attention_loss", "continuation_loss")


@dataclass
class PretrainSettings:
    """`pretrain:` in params.yaml."""

    steps: int = -1  # -1: tiny_steps for the tiny base, 0 (pass the base through) for a real one
    tiny_steps: int = 1200
    batch_size: int = 16  # per device
    learning_rate: float = 2e-3
    warmup_ratio: float = 0.025
    min_lr_ratio: float = 0.1  # cosine decay to this share of the peak rate
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dense_loss_weight: float = 1.0  # the dense heads (glyph, slot, colour, coordinates); 0 turns them off
    attention_loss_weight: float = (
        1.0  # LOCATE: the box's tokens attend to the asked text (eager attention); 0 off
    )
    attention_layer: int = 2  # whose head 0 is taught where to look
    # READ's copies of the reading (the answer, the boxed answer) attend to the phrase's characters,
    # with the head that reads the image: the copy circuit forms on text, where it is exact
    copy_attention: bool = False
    continuation_weight: float = (
        0.1  # the answer after its phrase (copies into the call / the answer); 0: not taught
    )
    tasks: dict[str, float] = field(default_factory=lambda: {"read": 0.5, "locate": 0.3, "read_clip": 0.2})
    # the first `first_share` of the steps draw from `first_tasks` instead (empty: no first phase)
    first_tasks: dict[str, float] = field(default_factory=dict)
    first_share: float = 0.0
    held_out: int = 200  # renders per held-out task
    eval_batch_size: int = 32
    logging_steps: int = 10
    save_steps: int = 200
    bf16: str = "auto"
    deepspeed: str | None = None
    seed: int = 0
    lr_scheduler: str = "cosine_with_min_lr"

    def __post_init__(self) -> None:
        for name, mix in (("tasks", self.tasks), ("first_tasks", self.first_tasks)):
            unknown = sorted(set(mix) - set(TASKS))
            if unknown:
                raise ValueError(f"pretrain.{name}: unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
            if (mix or name == "tasks") and not any(w > 0 for w in mix.values()):
                raise ValueError(f"pretrain.{name}: at least one task needs a positive weight")
        if not 0.0 <= self.first_share <= 1.0:
            raise ValueError(f"pretrain.first_share must be in [0, 1], got {self.first_share}")

    def mix_at(self, step: int, steps: int) -> dict[str, float]:
        """The task mix of training step `step` of `steps`."""
        return self.first_tasks if self.first_tasks and step < self.first_share * steps else self.tasks


def effective_steps(settings: PretrainSettings, model_config: ModelConfig) -> int:
    """The steps to train: `steps`, or with -1 `tiny_steps` for the tiny base and 0 (pass through) for a real
    one."""
    if settings.steps >= 0:
        return settings.steps
    return settings.tiny_steps if model_config.name_or_path == TINY else 0


# the dense labels a collated batch carries, flat over merged visual tokens in image order
DENSE_LABELS = ("glyph_labels", "slot_labels", "colour_labels", "coord_labels")
READ_LABELS = ("glyph_labels", "slot_labels")  # what READ examples teach; LOCATE teaches the others


class PerceptionCollator:
    """Renders and encodes training example `index` for each row, with its dense labels flat in image
    order and, for LOCATE, which keys (the asked text's centre cell) the box's tokens should attend to."""

    def __init__(
        self,
        encoder: PolicyEncoder,
        world: SyntheticConfig,
        vision: VisionConfig,
        settings: PretrainSettings,
        steps: int = 0,
    ):
        self.encoder, self.world, self.vision, self.settings, self.steps = (
            encoder,
            world,
            vision,
            settings,
            steps,
        )
        self.rows_per_step = settings.batch_size * world_size()  # rows come in order (a sequential sampler)
        self.tokens_seen = 0

    def example(self, index: int) -> PerceptionExample:
        task = task_of(
            index, self.settings.mix_at(index // self.rows_per_step, self.steps), self.settings.seed
        )
        return make_example(task, self.world, self.vision, self.settings.seed, TRAIN_STREAM, index)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        examples = [self.example(int(r["index"])) for r in rows]
        encoded = [self.encoder.encode(e.messages) for e in examples]
        self.tokens_seen += sum(len(e) for e in encoded)
        batch = self.encoder.collate(encoded)
        for key in DENSE_LABELS:
            labels = []
            for e in examples:
                for grid in e.glyph_labels:  # every image has glyph labels; the others may be absent
                    shape = (grid.size, 4) if key == "coord_labels" else (grid.size,)
                    teaches = (key in READ_LABELS) != (e.task in LOCATE_TASKS)  # LOCATE never learns glyphs
                    if teaches and getattr(e, key):
                        labels.append(torch.from_numpy(getattr(e, key)[0].reshape(shape)))
                    else:
                        labels.append(torch.full(shape, IGNORE_INDEX, dtype=torch.long))
            batch[key] = torch.cat(labels)
        answers = [self._answer(row) for row in batch["labels"]]  # each answer decoded once, before the split
        phrases = [_phrase_tokens(spans, decoded, e.phrase) for e, (spans, decoded) in zip(examples, answers)]
        batch["continuation_labels"] = self._split_phrases(batch["labels"], answers, phrases)
        batch["attend_locate"], batch["attend_read"] = self._attention_targets(
            examples, batch, answers, phrases
        )
        return batch

    @staticmethod
    def _split_phrases(labels, answers, phrases: Sequence[int]):
        """Leave each answer's phrase (its first `phrases[row]` tokens) in `labels` and move the rest of
        the turn (the copies) to the returned continuation labels, which the trainer weighs by
        `continuation_weight`: counted with the phrase, the copies' easy tokens would dilute the few
        that read the image."""
        import torch

        continuation = torch.full_like(labels, IGNORE_INDEX)
        for row, ((spans, _), n_phrase) in enumerate(zip(answers, phrases)):
            for position, _, _ in spans[n_phrase:]:
                continuation[row, position] = labels[row, position]
                labels[row, position] = IGNORE_INDEX
        return continuation

    def _attention_targets(
        self, examples: Sequence[PerceptionExample], batch: dict[str, Any], answers, phrases: Sequence[int]
    ):
        """Where the language model should look while it answers, as (batch, query, key) booleans:
        all of LOCATE's answer at the asked text's centre cell; READ's k-th character at the cells
        holding the asked text's k-th character (its slot)."""
        import torch

        rows, length = batch["input_ids"].shape
        locate = torch.zeros((rows, length, length), dtype=torch.bool)
        read = torch.zeros_like(locate)
        for row, e in enumerate(examples):
            images = (batch["input_ids"][row] == self.encoder.image_token_id).nonzero().flatten()
            spans, decoded = answers[row]
            if e.task in LOCATE_TASKS and e.target_cell is not None:
                # every token of the phrase, the thing's name as much as its box: both are read off the
                # asked text (the crop call after it copies the box from the phrase; its labels are apart)
                for position, _, _ in spans[: phrases[row]]:
                    locate[row, position - 1, images[e.target_cell]] = True
            elif e.task in READ_TASKS and e.slot_labels:
                slots = torch.from_numpy(e.slot_labels[0].reshape(-1))
                read_at = _character_positions(spans, decoded, e.answer)
                for position, k in read_at:
                    cells = images[: len(slots)][slots == k]
                    read[row, position - 1, cells] = True
                if self.settings.copy_attention:
                    # the copies after the phrase look at the phrase's token writing the same
                    # character: the head that copies text is the head that reads the image
                    source: dict[int, list[int]] = {}
                    for position, k in read_at:
                        source.setdefault(k, []).append(position)
                    for position, k in _copied_positions(spans, decoded, e.answer):
                        read[row, position - 1, source.get(k, [])] = True
        return locate, read

    def _answer(self, labels) -> tuple[list[tuple[int, int, int]], str]:
        """The answer's tokens as (label position, start, end) in the decoded answer, and that text."""
        decoded, spans = "", []
        for p in (labels != IGNORE_INDEX).nonzero().flatten().tolist():
            piece = self.encoder.tokenizer.decode([int(labels[p])])
            spans.append((p, len(decoded), len(decoded) + len(piece)))
            decoded += piece
        return spans, decoded


def _phrase_tokens(spans: Sequence[tuple[int, int, int]], decoded: str, phrase: str) -> int:
    """How many answer tokens write up to the end of `phrase` (all of them when it is not found)."""
    at = decoded.find(phrase) if phrase else -1
    if at == -1:
        return len(spans)
    end = at + len(phrase)
    return sum(1 for _, start, _ in spans if start < end)


def _positions_at(spans: Sequence[tuple[int, int, int]], start: int, length: int) -> list[tuple[int, int]]:
    """(label position, k) for each answer token that writes the k-th of `length` characters that
    begin at offset `start` of the decoded answer."""
    return [(p, k) for p, a, b in spans for k in range(length) if a <= start + k < b]


def _character_positions(
    spans: Sequence[tuple[int, int, int]], decoded: str, text: str
) -> list[tuple[int, int]]:
    """(label position, k) for each answer token that writes the k-th character of `text` (its first
    quoted occurrence, inside the phrase), so the position before it is where that character is read."""
    start = decoded.find(f'"{text}"')
    if start == -1:
        return []
    return _positions_at(spans, start + 1, len(text))


def _copied_positions(
    spans: Sequence[tuple[int, int, int]], decoded: str, text: str
) -> list[tuple[int, int]]:
    """(label position, k) for each answer token that writes the k-th character of `text` in the
    occurrences after its first quoted one (the copies: `So the answer is "917"`, `\\boxed{917}`)."""
    first = decoded.find(f'"{text}"')
    if first == -1 or not text:
        return []
    out = []
    start = decoded.find(text, first + 1 + len(text))
    while start != -1:
        out += _positions_at(spans, start, len(text))
        start = decoded.find(text, start + len(text))
    return out


def coord_values(box_step: float) -> list[float]:
    """Every coordinate a box rounded to `box_step` can have, 0.0 to 1.0."""
    n = round(1 / box_step)
    return [round(i / n, 2) for i in range(n + 1)]


def perception_token_ids(tokenizer, box_step: float) -> dict[str, list[int] | None]:
    """The token ids the dense heads tie to: each glyph character, each colour word as questions
    write it (" red"), each box coordinate as a crop call writes it ("0.4"); None for a group when
    one of its members is not a single token (that head is then a plain linear layer)."""

    def single(texts: Sequence[str]) -> list[int] | None:
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None

    return {
        "glyph": single(GLYPH_CLASSES),
        "colour": single([f" {c}" for c in COLOURS]),
        "coord": single([json.dumps(v) for v in coord_values(box_step)]),
    }


def _heads(hidden: int, token_ids: dict[str, list[int] | None], coord_classes: int):
    import torch

    class TiedClassifier(torch.nn.Module):
        """Logits over classes whose vectors are the language model's own embeddings of their tokens
        (plus a learned "none" class when `none`), so a visual token that carries a class looks like
        the text token naming it; a plain linear layer when the tokens are not single ones."""

        def __init__(self, ids: list[int] | None, classes: int, none: bool, project: bool = False):
            super().__init__()
            self.register_buffer("ids", torch.tensor(ids or [], dtype=torch.long), persistent=False)
            self.untied = None if ids else torch.nn.Linear(hidden, classes)
            self.project = torch.nn.Linear(hidden, hidden) if project and ids else None
            self.none = torch.nn.Parameter(torch.zeros(hidden)) if none else None

        def forward(self, tokens, embeddings):
            if self.untied is not None:
                logits = self.untied(tokens)
            else:
                logits = (self.project(tokens) if self.project is not None else tokens) @ embeddings[
                    self.ids
                ].T
            return logits if self.none is None else torch.cat([logits, (tokens @ self.none)[:, None]], dim=1)

    class PerceptionHeads(torch.nn.Module):
        """The training-only dense heads over the vision tower's merged tokens."""

        def __init__(self) -> None:
            super().__init__()
            self.glyph = TiedClassifier(token_ids["glyph"], len(GLYPH_CLASSES), none=True)
            self.slot = torch.nn.Linear(hidden, NO_SLOT + 1)
            self.colour = TiedClassifier(token_ids["colour"], len(COLOURS), none=True)
            # one projection per coordinate: a token holding a text's centre carries all four of its box
            self.coords = torch.nn.ModuleList(
                TiedClassifier(token_ids["coord"], coord_classes, none=False, project=True) for _ in range(4)
            )

        def forward(self, tokens, embeddings) -> dict[str, Any]:
            return {
                "glyph_labels": self.glyph(tokens, embeddings),
                "slot_labels": self.slot(tokens),
                "colour_labels": self.colour(tokens, embeddings),
                "coord_labels": [c(tokens, embeddings) for c in self.coords],
            }

    return PerceptionHeads()


def dense_losses(logits: Mapping[str, Any], labels: Mapping[str, Any]) -> dict[str, Any]:
    """Cross-entropy of each dense head over the tokens its labels cover (0 where none do)."""
    import torch.nn.functional as F

    def ce(x, y):
        y = y.to(x.device)
        covered = y != IGNORE_INDEX
        return F.cross_entropy(x[covered].float(), y[covered]) if covered.any() else x.sum() * 0.0

    losses = {key: ce(logits[key], labels[key]) for key in ("glyph_labels", "slot_labels", "colour_labels")}
    losses["coord_labels"] = sum(
        ce(x, labels["coord_labels"][:, j]) for j, x in enumerate(logits["coord_labels"])
    )
    return losses


ATTENTION_HEADS = {"attend_locate": 0, "attend_read": 1}  # which head of `attention_layer` each task teaches


def attention_loss(attentions, layer: int, targets: Mapping[str, Any]):
    """Mean -log of the attention mass each taught head of `layer` puts on its target keys, over the
    query positions that have targets (LOCATE's box tokens, READ's characters)."""
    import torch

    heads = attentions[
        min(layer, len(attentions) - 1)
    ]  # (batch, heads, length, length); a shallower model: its last
    terms = []
    for name, head in ATTENTION_HEADS.items():
        keys = targets[name].to(heads.device)
        queries = keys.any(-1)
        if queries.any():
            mass = (heads[:, min(head, heads.shape[1] - 1)] * keys.to(heads.dtype)).sum(-1)
            terms.append(-torch.log(mass[queries].float() + 1e-6))
    return torch.cat(terms).mean() if terms else heads.sum() * 0.0


def continuation_loss(hidden, labels, lm_head):
    """Next-token cross-entropy on `labels` (IGNORE_INDEX elsewhere), mean over its tokens; the
    logits are computed only where a label follows."""
    import torch

    rows, positions = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    logits = lm_head(hidden[rows, positions])
    return torch.nn.functional.cross_entropy(logits.float(), labels[rows, positions + 1].to(logits.device))


def _trainer_class():
    """`PerceptionTrainer`, imported here: its module imports TRL."""
    from videor4.train.perception_trainer import PerceptionTrainer

    return PerceptionTrainer


def pretrain(
    init: str | os.PathLike,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    world: SyntheticConfig,
    vision: VisionConfig,
    model_config: ModelConfig,
    settings: PretrainSettings,
    log_fn: LogFn | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train `init` on rendered perception examples; save a HF checkpoint to `out_dir` (atomically).

    With zero steps the base is copied through unchanged.  Returns (metrics, loss curve).
    """
    steps = effective_steps(settings, model_config)
    if steps == 0:
        _copy_checkpoint(init, out_dir)
        return {"steps": 0, "passed_through": True}, []

    import datasets
    import torch
    from trl import SFTConfig

    bf16 = use_bf16(settings.bf16)
    policy, encoder, model = _trainable_policy(init, model_config, settings, bf16)
    torch.manual_seed(settings.seed)  # the heads' initial weights
    _attach_heads(model, policy.tokenizer, vision)
    collator = PerceptionCollator(encoder, world, vision, settings, steps)
    work = Path(work_dir)
    key = _run_key(init, world, vision, model_config, settings, steps)
    n_rows = steps * settings.batch_size * world_size()
    trainer = _trainer_class()(
        model=model,
        args=SFTConfig(**_trainer_settings(work, settings, model_config, steps)),
        train_dataset=datasets.Dataset.from_dict({"index": list(range(n_rows))}),
        data_collator=collator,
        processing_class=policy.tokenizer,
        callbacks=[step_logger(log_fn, progress)],
        dense_loss_weight=settings.dense_loss_weight,
        attention_loss_weight=settings.attention_loss_weight,
        attention_layer=settings.attention_layer,
        continuation_weight=settings.continuation_weight,
    )
    quiet(trainer)
    trained = train_resumable(
        trainer,
        policy,
        out_dir,
        work,
        key,
        merge_lora=False,
        before_save=lambda: delattr(trainer.accelerator.unwrap_model(trainer.model), HEAD_ATTRIBUTE),
    )
    curve = logged_curve(trainer, "loss")
    return _pretrain_metrics(trained, curve, n_rows, collator.tokens_seen, policy, bf16), curve


def _run_key(
    init: str | os.PathLike,
    world: SyntheticConfig,
    vision: VisionConfig,
    model_config: ModelConfig,
    settings: PretrainSettings,
    steps: int,
) -> str:
    """The fingerprint of a run's inputs and settings: a work dir's checkpoints resume only the same run."""
    return fingerprint(
        init=dir_digest(init),
        world=asdict(world),
        vision=asdict(vision),
        model=asdict(model_config),
        settings=asdict(settings),
        steps=steps,
    )


def _trainable_policy(
    init: str | os.PathLike, model_config: ModelConfig, settings: PretrainSettings, bf16: bool
):
    """(the policy at `init`, its encoder, its model ready to train)."""
    # the attention loss reads attention weights, which only the eager implementation returns
    attention = "eager" if settings.attention_loss_weight > 0 else model_config.attn_implementation
    policy = load_policy(init, dtype="bfloat16" if bf16 else "float32", attn_implementation=attention)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    # pretraining is where the vision tower learns: it always trains here, never through LoRA
    config = replace(model_config, freeze_vision=False, lora=replace(model_config.lora, enabled=False))
    return policy, encoder, prepare_for_training(policy.model, config)


def _attach_heads(model, tokenizer, vision: VisionConfig) -> None:
    """Give `model` the training-only dense heads (initialised from torch's global rng), in its
    device and dtype."""
    hidden = model.config.get_text_config().hidden_size
    token_ids = perception_token_ids(tokenizer, vision.box_step)
    heads = _heads(hidden, token_ids, len(coord_values(vision.box_step)))
    setattr(model, HEAD_ATTRIBUTE, heads.to(model.device, model.dtype))


def _trainer_settings(
    work: Path, settings: PretrainSettings, model_config: ModelConfig, steps: int
) -> dict[str, Any]:
    """SFTConfig's keyword arguments: the shared trainer arguments, `settings.lr_scheduler` (by default
    a cosine decay to `min_lr_ratio`), `steps` steps, and the rows in order."""
    cosine_min = settings.lr_scheduler == "cosine_with_min_lr"
    return {
        **trainer_arguments(work, settings, model_config),
        "lr_scheduler_type": settings.lr_scheduler,
        "lr_scheduler_kwargs": {"min_lr_rate": settings.min_lr_ratio} if cosine_min else {},
        "max_steps": steps,
        "per_device_train_batch_size": settings.batch_size,
        "train_sampling_strategy": "sequential",  # row i is example i, so the task mix can follow the steps
        "max_length": None,
        "dataset_kwargs": {"skip_prepare_dataset": True},
    }


def _pretrain_metrics(
    trained, curve: list[dict[str, float]], n_rows: int, tokens_seen: int, policy, bf16: bool
) -> dict[str, Any]:
    """The run's metrics: steps, losses (the last of each auxiliary one), throughput and sizes."""
    return {
        "steps": int(trained.output.global_step),
        "resumed_from_step": trained.resumed_from_step,
        "examples": n_rows,
        "train_loss_first": curve[0]["loss"] if curve else None,
        "train_loss_last": curve[-1]["loss"] if curve else None,
        **{f"{name}_last": curve[-1].get(name) if curve else None for name in AUX_LOSSES},
        "train_tokens_per_second": tokens_seen / max(trained.seconds, 1e-9),
        "train_seconds": trained.seconds,
        "parameters": count_parameters(policy.model),
        "bf16": bf16,
        "processes": world_size(),
    }


def _copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    from videor4.core.io import atomic_dir

    with atomic_dir(Path(dst)) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


# ---------------------------------------------------------------- held-out metrics
def greedy_answers(
    model,
    encoder: PolicyEncoder,
    examples: Sequence[PerceptionExample],
    batch_size: int,
    max_new_tokens: int = 24,
) -> list[str]:
    """Each example's answer as the model writes it, greedy, from its user turn."""
    import torch

    answers: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = encoder.collate([encoder.encode_prompt(e.messages[:1]) for e in chunk], padding_side="left")
        batch.pop("labels")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, batch["input_ids"].shape[1] :]
        answers += [encoder.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    return answers


TIGHT_AREA = 4.0  # locate_tight_cover: a covering box at most this many times the text's area


def boxed_answer_right(predicted: str, text: str) -> bool:
    """Whether a READ turn's final `\\boxed{}` answer is the asked text: what a policy built on it
    would answer, since a right reading can still be copied wrong into the answer."""
    return extract_boxed(predicted) == text


def score_task(
    task: str, examples: Sequence[PerceptionExample], predicted: Sequence[str], crop_margin: float
) -> tuple[dict[str, list[bool]], list[dict[str, Any]]]:
    """One held-out task's answers scored: {metric name: per-example hits} and one row per example."""
    hits, tight, named, answered = [], [], [], []
    rows: list[dict[str, Any]] = []
    for i, (e, p) in enumerate(zip(examples, predicted)):
        if task in LOCATE_TASKS:
            box = phrase_box(p)
            hit = box is not None and crop_covers(box, e.evidence_box, crop_margin)
            # a box that covers by being huge gives a crop too coarse to read: count it apart
            tight.append(hit and box_area(box) <= TIGHT_AREA * box_area(e.evidence_box))
            # a box at another text after the right name is a miss of finding, not of naming
            named.append(phrase_thing(p) == phrase_thing(e.phrase))
        elif task == "read_mc":  # the whole way: the reading, then the option that holds it
            hit = extract_boxed(p) == e.choice
        else:
            reading = phrase_reading(p)
            hit = reading is not None and normalize_answer(reading) == normalize_answer(e.answer)
            answered.append(boxed_answer_right(p, e.answer))
        hits.append(hit)
        rows.append(
            {"task": task, "index": i, "answer": e.choice or e.answer, "predicted": p, "correct": bool(hit)}
        )
    name = f"{task}_cover" if task in LOCATE_TASKS else f"{task}_acc"
    scores = {
        name: hits,
        f"{task}_tight_cover": tight,
        f"{task}_named_acc": named,
        f"{task}_answer_acc": answered,
    }
    return scores, rows


def perception_metrics(
    checkpoint: str | os.PathLike,
    world: SyntheticConfig,
    vision: VisionConfig,
    settings: PretrainSettings,
    device: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score a checkpoint on `settings.held_out` renders per task; (metrics, one row per example)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(checkpoint, device=device)
    policy.model.eval()
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    metrics: dict[str, Any] = {"held_out": settings.held_out}
    rows: list[dict[str, Any]] = []
    for task in HELD_OUT_TASKS:
        # the same index gives the same scene and question in read and read_lowres
        examples = [
            make_example(task, world, vision, settings.seed, HELD_OUT_STREAM, i)
            for i in range(settings.held_out)
        ]
        # READ_MC's turn goes on past the reading to the option's letter
        predicted = greedy_answers(
            policy.model,
            encoder,
            examples,
            settings.eval_batch_size,
            max_new_tokens=64 if task == "read_mc" else 40,
        )
        scores, task_rows = score_task(task, examples, predicted, vision.crop_margin)
        rows += task_rows
        for key, values in scores.items():
            if values:
                metrics[key] = sum(values) / len(values)
                estimate = wilson(sum(values), len(values))
                metrics[f"{key}_ci95"] = [estimate.low, estimate.high]
    return metrics, rows


def pretrain_settings(params: dict[str, Any]) -> PretrainSettings:
    """`pretrain:`, with the top-level seed."""
    merged = {**section(params, "pretrain")}
    merged.setdefault("seed", int(params.get("seed", 0)))
    return fill(PretrainSettings, merged, "pretrain")
