"""What the SFT and GRPO trainers share: run fingerprints and resumable work directories,
bf16 selection, per-step logging to a caller's function, and the final atomic save."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videor4.core.io import read_json
from videor4.core.launch import rendezvous_for_one_process
from videor4.core.params import ParamsError, fill, section

LogFn = Callable[[Mapping[str, float], int], None]
FINGERPRINT_FILE = "fingerprint.json"
# The checkpoints CRP-SFT may start from: the full schedule (rl_d) and the paper's ablations.
CRP_SFT_INITS = ("models/rl_d", "models/drp_sft", "models/pretrain", "models/base")


@dataclass
class CurriculumParams:
    """`curriculum:` in params.yaml: the schedule.  crp_sft reads its start from here, not from its
    command line: DVC puts `${...}` values into a shell command unquoted, so a value there would
    run as shell code before anything could check it."""

    crp_sft_init: str = "models/rl_d"  # one of CRP_SFT_INITS

    def __post_init__(self) -> None:
        if self.crp_sft_init not in CRP_SFT_INITS:
            allowed = f"is not one of {', '.join(CRP_SFT_INITS)}"
            raise ParamsError(f"params curriculum.crp_sft_init: {self.crp_sft_init!r} {allowed}")


def curriculum_params(params: Mapping[str, Any]) -> CurriculumParams:
    return fill(CurriculumParams, section(params, "curriculum"), "curriculum")


def fingerprint(**parts: Any) -> str:
    """A stable hash of what a training run depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_work_dir(work_dir: Path, key: str, accelerator=None) -> str | None:
    """Keep checkpoints from an interrupted run with the same fingerprint; the last one to resume from.

    Called once the trainer exists, with its accelerator: under a multi-process launch only
    the main process clears or stamps the directory, before the others look (they must not
    delete what it is writing).  With several machines `work_dir` must be on a filesystem
    they share.  (Not earlier: setting up the distributed state before the trainer's
    arguments exist would skip DeepSpeed's own initialisation.)
    """
    from transformers.trainer_utils import get_last_checkpoint

    main = accelerator is None or accelerator.is_main_process
    with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():
        if main:
            stamp = work_dir / FINGERPRINT_FILE
            if work_dir.exists():
                same = stamp.is_file() and read_json(stamp).get("fingerprint") == key
                if not same:
                    shutil.rmtree(work_dir)
            work_dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"fingerprint": key}))
        return get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None


def use_bf16(setting: str) -> bool:
    import torch

    if str(setting).lower() == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return str(setting).lower() in ("true", "1", "yes")


def numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def step_logger(log_fn: LogFn | None, progress=None):
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        """Forwards each logged step (loss, learning rate, grad norm, ...) to `log_fn`; one quiet progress
        bar."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if progress and state.is_world_process_zero:
                self.bar = progress("train", state.max_steps)
                self.bar(state.global_step)  # a resumed run starts part-way

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar:
                self.bar(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            values = numbers(logs)
            if log_fn and values:
                log_fn({f"train/{k}": v for k, v in values.items()}, state.global_step)

    return StepLogger()


def dir_digest(path: str | os.PathLike) -> str:
    """Digest of a checkpoint directory's files (names, sizes, mtimes): cheap, and changes when it is
    rewritten."""
    root = Path(path)
    if not root.is_dir():
        return str(path)  # a Hub id
    entries = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )
    return fingerprint(files=entries)


def trainer_arguments(work_dir: str | os.PathLike, settings: Any, model_config: Any) -> dict[str, Any]:
    """The `TrainingArguments` both trainers share, from a settings dataclass with learning_rate,
    warmup_ratio, weight_decay, lr_scheduler, max_grad_norm, logging_steps, save_steps, seed, bf16
    and deepspeed: resumable checkpoints in `work_dir`, no reporting (the caller tracks), quiet."""
    import torch

    if settings.deepspeed:
        rendezvous_for_one_process()
    return dict(
        output_dir=str(work_dir),
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a share of the steps
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler,
        max_grad_norm=settings.max_grad_norm,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=use_bf16(settings.bf16),
        deepspeed=settings.deepspeed,
        activation_checkpointing=model_config.gradient_checkpointing,
        remove_unused_columns=False,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def quiet(trainer) -> None:
    """Drop the callbacks that print every log dict to stdout (the stage has one progress bar)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)


def save_final(trainer, policy, out_dir: str | os.PathLike, work_dir: Path, merge_lora: bool) -> None:
    """Rank 0 saves the trained policy as a HF checkpoint (atomically); then the work dir goes."""
    from videor4.core.io import atomic_dir
    from videor4.policy.model import Policy, save_policy

    if trainer.is_world_process_zero():
        final = trainer.accelerator.unwrap_model(trainer.model)
        if merge_lora:
            final = final.merge_and_unload()
        with atomic_dir(Path(out_dir)) as tmp:
            save_policy(Policy(final, policy.tokenizer, policy.image_processor, policy.source), tmp)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():  # finished: nothing to resume any more
        shutil.rmtree(work_dir, ignore_errors=True)


@dataclass
class Trained:
    """What `train_resumable` reports: the trainer's output, its wall time, where it resumed."""

    output: Any  # transformers' TrainOutput (global_step, training_loss, ...)
    seconds: float
    resumed_from_step: int  # 0 for a fresh start


def train_resumable(
    trainer,
    policy,
    out_dir: str | os.PathLike,
    work_dir: Path,
    key: str,
    merge_lora: bool,
    before_save: Callable[[], None] | None = None,
) -> Trained:
    """The lifecycle every trainer shares: resume from `work_dir`'s last checkpoint when the run's
    fingerprint `key` is unchanged, train, then save the final policy atomically to `out_dir`
    (`before_save` first strips what only training needs, such as an auxiliary head)."""
    resume_from = prepare_work_dir(work_dir, key, trainer.accelerator)
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - started
    if before_save is not None:
        before_save()
    save_final(trainer, policy, out_dir, work_dir, merge_lora)
    return Trained(output, seconds, int(Path(resume_from).name.split("-")[-1]) if resume_from else 0)


def logged_curve(trainer, key: str) -> list[dict[str, float]]:
    """Every logged step that has `key`, with its numbers.  The trainer's history survives a resume
    (it is saved with each checkpoint), so the curve spans an interruption."""
    return [{**numbers(h), "step": int(h["step"])} for h in trainer.state.log_history if key in h]
