"""Perception pretraining (stage `pretrain`): teach a base that cannot read to read once zoomed
and to say where a named thing is, on TRL's SFTTrainer.

Examples are rendered on the fly by the synthetic generator (`videor4.data.perception`), from a
seed stream no video uses, so the stage sees as many distinct scenes as it has steps.  The loss
is TRL's answer-only loss plus an auxiliary one: a linear head on the vision tower's merged
tokens predicts the glyph under each 28x28 cell (weight `glyph_loss_weight`).  That dense
signal is what lets a randomly initialised tower learn to read in minutes (docs/DESIGN.md §8).
The head only exists during training; the saved checkpoint is an ordinary Qwen2.5-VL one.

`PretrainSettings` is the config (params `pretrain:`), `pretrain` runs it, `perception_metrics`
scores a checkpoint on held-out renders: `read_acc` (zoomed), `read_acc_lowres` (the same
questions on the low-resolution view), `read_clip_acc` (captions in a clipped frame) and
`locate_cover` (share of predicted boxes whose crop, widened by the margin, covers >= 90 % of
the text's box).
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
from videor4.data.evidence import box_coverage
from videor4.data.perception import HELD_OUT_STREAM, HELD_OUT_TASKS, NO_GLYPH, TASKS, TRAIN_STREAM, PerceptionExample, make_example, task_of
from videor4.data.synthetic import SyntheticConfig
from videor4.policy.encoding import IGNORE_INDEX, PolicyEncoder
from videor4.policy.model import TINY, ModelConfig, count_parameters, load_policy, prepare_for_training
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

HEAD_ATTRIBUTE = "glyph_head"  # the training-only head, removed before the final save


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
    glyph_loss_weight: float = 0.3
    tasks: dict[str, float] = field(default_factory=lambda: {"read": 0.5, "locate": 0.3, "read_clip": 0.2})
    held_out: int = 200  # renders per held-out task
    eval_batch_size: int = 32
    logging_steps: int = 10
    save_steps: int = 200
    bf16: str = "auto"
    deepspeed: str | None = None
    seed: int = 0
    lr_scheduler: str = "cosine_with_min_lr"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"pretrain.tasks: unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
        if not any(w > 0 for w in self.tasks.values()):
            raise ValueError("pretrain.tasks: at least one task needs a positive weight")


def effective_steps(settings: PretrainSettings, model_config: ModelConfig) -> int:
    """The steps to train: `steps`, or with -1 `tiny_steps` for the tiny base and 0 (pass through) for a real one."""
    if settings.steps >= 0:
        return settings.steps
    return settings.tiny_steps if model_config.name_or_path == TINY else 0


class PerceptionCollator:
    """Renders and encodes training example `index` for each row; glyph labels flat, in image order."""

    def __init__(self, encoder: PolicyEncoder, world: SyntheticConfig, vision: VisionConfig, settings: PretrainSettings):
        self.encoder, self.world, self.vision, self.settings = encoder, world, vision, settings
        self.tokens_seen = 0

    def example(self, index: int) -> PerceptionExample:
        task = task_of(index, self.settings.tasks, self.settings.seed)
        return make_example(task, self.world, self.vision, self.settings.seed, TRAIN_STREAM, index)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        examples = [self.example(int(r["index"])) for r in rows]
        encoded = [self.encoder.encode(e.messages) for e in examples]
        self.tokens_seen += sum(len(e) for e in encoded)
        batch = self.encoder.collate(encoded)
        labels = []
        for e in examples:
            for grid in e.glyph_labels:
                flat = torch.from_numpy(grid.reshape(-1))
                # the low-resolution view must not learn glyphs: LOCATE trains only the box
                labels.append(flat if e.task != "locate" else torch.full_like(flat, IGNORE_INDEX))
        batch["glyph_labels"] = torch.cat(labels)
        return batch


def _trainer_class():
    from trl import SFTTrainer

    from videor4.policy.model import vision_tower

    class PerceptionTrainer(SFTTrainer):
        """SFTTrainer whose loss adds the glyph head's cross-entropy on the vision tower's merged tokens."""

        def __init__(self, *args, glyph_loss_weight: float = 0.3, **kwargs):
            super().__init__(*args, **kwargs)
            self.glyph_loss_weight = glyph_loss_weight
            self._glyph_losses: list[float] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch.nn.functional as F

            glyph_labels = inputs.pop("glyph_labels")
            captured = {}
            # the first call only: TRL may run a second, gradient-free forward for its token metrics
            def keep_first(module, args, out) -> None:  # returning None leaves the output as it is
                captured.setdefault("tokens", out.pooler_output)

            hook = vision_tower(model).register_forward_hook(keep_first)
            try:
                loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            finally:
                hook.remove()
            head = getattr(self.accelerator.unwrap_model(model), HEAD_ATTRIBUTE)
            tokens = captured["tokens"]
            if not tokens.requires_grad and model.training:
                raise RuntimeError("the vision tower's tokens carry no gradient: the glyph loss would not train it")
            if tokens.shape[0] != glyph_labels.shape[0]:
                raise RuntimeError(f"{tokens.shape[0]} merged visual tokens but {glyph_labels.shape[0]} glyph labels")
            glyph_loss = F.cross_entropy(head(tokens).float(), glyph_labels.to(tokens.device), ignore_index=IGNORE_INDEX)
            self._glyph_losses.append(float(glyph_loss.detach()))
            loss = loss + self.glyph_loss_weight * glyph_loss
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            if self._glyph_losses and "loss" in logs:
                logs["glyph_loss"] = sum(self._glyph_losses) / len(self._glyph_losses)
                self._glyph_losses.clear()
            super().log(logs, start_time)

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
    policy = load_policy(init, dtype="bfloat16" if bf16 else "float32", attn_implementation=model_config.attn_implementation)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    # pretraining is where the vision tower learns: it always trains here, never through LoRA
    model = prepare_for_training(policy.model, replace(model_config, freeze_vision=False, lora=replace(model_config.lora, enabled=False)))
    torch.manual_seed(settings.seed)
    hidden = model.config.get_text_config().hidden_size
    setattr(model, HEAD_ATTRIBUTE, torch.nn.Linear(hidden, NO_GLYPH + 1).to(model.device, model.dtype))
    collator = PerceptionCollator(encoder, world, vision, settings)
    work = Path(work_dir)
    key = fingerprint(init=dir_digest(init), world=asdict(world), vision=asdict(vision), model=asdict(model_config),
                      settings=asdict(settings), steps=steps)
    n_rows = steps * settings.batch_size * world_size()
    args = SFTConfig(
        **{**trainer_arguments(work, settings, model_config), "lr_scheduler_type": settings.lr_scheduler},
        lr_scheduler_kwargs={"min_lr_rate": settings.min_lr_ratio} if settings.lr_scheduler == "cosine_with_min_lr" else {},
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_dict({"index": list(range(n_rows))}),
        data_collator=collator,
        processing_class=policy.tokenizer,
        callbacks=[step_logger(log_fn, progress)],
        glyph_loss_weight=settings.glyph_loss_weight,
    )
    quiet(trainer)
    trained = train_resumable(
        trainer, policy, out_dir, work, key, merge_lora=False,
        before_save=lambda: delattr(trainer.accelerator.unwrap_model(trainer.model), HEAD_ATTRIBUTE),
    )

    curve = logged_curve(trainer, "loss")
    metrics = {
        "steps": int(trained.output.global_step),
        "resumed_from_step": trained.resumed_from_step,
        "examples": n_rows,
        "train_loss_first": curve[0]["loss"] if curve else None,
        "train_loss_last": curve[-1]["loss"] if curve else None,
        "glyph_loss_last": curve[-1].get("glyph_loss") if curve else None,
        "train_tokens_per_second": collator.tokens_seen / max(trained.seconds, 1e-9),
        "train_seconds": trained.seconds,
        "parameters": count_parameters(policy.model),
        "bf16": bf16,
        "processes": world_size(),
    }
    return metrics, curve


def _copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    from videor4.core.io import atomic_dir

    with atomic_dir(Path(dst)) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


# ---------------------------------------------------------------- held-out metrics
def greedy_answers(model, encoder: PolicyEncoder, examples: Sequence[PerceptionExample], batch_size: int, max_new_tokens: int = 24) -> list[str]:
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


def parse_box(text: str) -> list[float] | None:
    try:
        box = json.loads(text)
    except ValueError:
        return None
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        return [float(v) for v in box]
    return None


def perception_metrics(
    checkpoint: str | os.PathLike, world: SyntheticConfig, vision: VisionConfig, settings: PretrainSettings, device: str | None = None
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
        examples = [make_example(task, world, vision, settings.seed, HELD_OUT_STREAM, i) for i in range(settings.held_out)]
        predicted = greedy_answers(policy.model, encoder, examples, settings.eval_batch_size)
        hits = []
        for i, (e, p) in enumerate(zip(examples, predicted)):
            if task == "locate":
                box = parse_box(p)
                m = vision.crop_margin
                widened = None if box is None else [box[0] - m, box[1] - m, box[2] + m, box[3] + m]
                hit = widened is not None and box_coverage(e.evidence_box, widened) >= 0.9
            else:
                hit = normalize_answer(p) == normalize_answer(e.answer)
            hits.append(hit)
            rows.append({"task": task, "index": i, "answer": e.answer, "predicted": p, "correct": bool(hit)})
        name = "locate_cover" if task == "locate" else f"{task}_acc"
        metrics[name] = sum(hits) / len(hits)
        estimate = wilson(sum(hits), len(hits))
        metrics[f"{name}_ci95"] = [estimate.low, estimate.high]
    return metrics, rows


def pretrain_settings(params: dict[str, Any]) -> PretrainSettings:
    """`pretrain:`, with the top-level seed."""
    merged = {**section(params, "pretrain")}
    merged.setdefault("seed", int(params.get("seed", 0)))
    return fill(PretrainSettings, merged, "pretrain")

