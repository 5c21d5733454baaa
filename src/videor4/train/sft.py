"""Supervised fine-tuning on rumination trajectories (DRP-SFT, CRP-SFT), on TRL's SFTTrainer.

The split follows TRL: `SFTSettings` (a dataclass filled from params.yaml) is the
config, `train_sft` runs the trainer.  Trajectories are encoded on the fly by the
shared `PolicyEncoder` (assistant-only labels), so TRL's own dataset preparation
is skipped.  Bad trajectories (missing images, turns that do not parse, too
long) are skipped with a counted reason before training; too many of them is an
error.  Checkpoints go to a work directory keyed by a fingerprint of the inputs
and settings, so a killed run resumes from its last checkpoint and a changed run
starts clean.  The library knows nothing of MLflow: per-step logs go to a
callback the caller supplies.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from videor4.core.launch import world_size
from videor4.core.params import curriculum_settings
from videor4.policy.encoding import EncodingError, PolicyEncoder
from videor4.policy.model import ModelConfig, count_parameters, load_policy, prepare_for_training
from videor4.rumination.protocol import format_assistant_turn, parse_turn
from videor4.rumination.trajectory import Trajectory, trajectory_messages
from videor4.rumination.video import READ_ERRORS
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


@dataclass
class SFTSettings:
    """One SFT stage's training settings (`sft:` shared keys, overridden by `sft.drp` / `sft.crp`)."""

    learning_rate: float = 1e-5
    epochs: float = 1.0
    batch_size: int = 1  # per device
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    max_length: int = 8192  # longer trajectories are skipped, never truncated
    max_bad_fraction: float = 0.1
    logging_steps: int = 1
    save_steps: int = 50
    bf16: str = "auto"  # auto | true | false
    deepspeed: str | None = None  # a DeepSpeed JSON config (configs/deepspeed/zero{2,3}.json) on GPUs
    seed: int = 0
    format_eval_prompts: int = 32
    format_eval_max_new_tokens: int = 256


class SFTDataError(ValueError):
    pass


@dataclass
class SFTData:
    trajectories: list[Trajectory]
    total: int
    skipped: Counter = field(default_factory=Counter)
    tokens: int = 0  # tokens in one pass over the kept trajectories

    @property
    def bad_fraction(self) -> float:
        return sum(self.skipped.values()) / max(self.total, 1)


# ---------------------------------------------------------------- data
def trajectory_problem(traj: Trajectory) -> tuple[str, str] | None:
    """(reason, detail) when a trajectory must not be trained on, else None."""
    video = traj.video if isinstance(traj.video, str) else None
    if video is not None and not Path(video).exists():
        return "missing_video", f"{traj.traj_id}: video {video} does not exist"
    for k, step in enumerate(traj.steps):
        turn = parse_turn(format_assistant_turn(step.thought, step.tool_call))
        if turn.tool_call is None or turn.tool_call.to_dict() != step.tool_call.to_dict():
            return "unparseable_turn", f"{traj.traj_id}: step {k} does not parse back ({turn.call_error})"
        for path in step.images:
            if not Path(path).is_file():
                return "missing_image", f"{traj.traj_id}: step {k} image {path} does not exist"
    final = parse_turn(format_assistant_turn(traj.final_thought, answer=traj.final_answer))
    if final.tool_call is not None or final.call_error or final.answer != traj.final_answer:
        return "unparseable_turn", f"{traj.traj_id}: the final answer does not parse back as \\boxed{{}}"
    return None


def load_sft_data(
    path: str | os.PathLike,
    encoder: PolicyEncoder,
    max_bad_fraction: float,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> SFTData:
    """Read and check every trajectory; skip bad ones with a counted reason, fail past `max_bad_fraction`."""
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"trajectory file {path} does not exist")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tick = progress("check trajectories", len(lines)) if progress else None
    data = SFTData(trajectories=[], total=len(lines))
    examples: list[str] = []
    for lineno, line in enumerate(lines, 1):
        problem: tuple[str, str] | None
        try:
            traj = Trajectory.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            traj, problem = None, ("malformed_row", f"{path}:{lineno}: {exc}")
        else:
            problem = trajectory_problem(traj)
        if traj is not None and problem is None:
            try:
                data.tokens += len(encoder.encode(trajectory_messages(traj)))
            except EncodingError as exc:
                problem = (exc.reason, f"{traj.traj_id}: {exc}")
            except READ_ERRORS as exc:  # a corrupt video surfaces here, while decoding the shown frames
                # only read errors: anything else is a bug, which must not hide under max_bad_fraction
                problem = ("unreadable_video", f"{traj.traj_id}: {exc}")
        if problem is None:
            data.trajectories.append(traj)
        else:
            data.skipped[problem[0]] += 1
            if len(examples) < 3:
                examples.append(problem[1])
        if tick:
            tick(1)
    if data.total == 0:
        raise SFTDataError(f"{path} holds no trajectories")
    if not data.trajectories or data.bad_fraction > max_bad_fraction:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(data.skipped.items()))
        raise SFTDataError(
            f"{sum(data.skipped.values())} of {data.total} trajectories in {path} are unusable "
            f"({reasons}), more than max_bad_fraction {max_bad_fraction}; e.g. " + "; ".join(examples)
        )
    return data


class TrajectoryCollator:
    """Encodes a batch of trajectories (by index) into padded model inputs."""

    def __init__(self, encoder: PolicyEncoder, trajectories: Sequence[Trajectory]) -> None:
        self.encoder, self.trajectories = encoder, trajectories
        self.tokens_seen = 0

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        encoded = [self.encoder.encode(trajectory_messages(self.trajectories[int(r["index"])])) for r in rows]
        self.tokens_seen += sum(len(e) for e in encoded)
        return self.encoder.collate(encoded)


# ---------------------------------------------------------------- resume
# ---------------------------------------------------------------- training
def train_sft(
    trajectories_path: str | os.PathLike,
    init: str | os.PathLike,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    model_config: ModelConfig,
    settings: SFTSettings,
    log_fn: LogFn | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune `init` on the trajectories; save a HF checkpoint to `out_dir` (atomically).

    Returns (metrics, loss curve).  Resumes from `work_dir`'s last checkpoint when the
    inputs and settings are unchanged since the interrupted run.
    """
    import datasets
    from trl import SFTConfig, SFTTrainer

    from videor4.core.io import files_md5

    bf16 = use_bf16(settings.bf16)
    policy = load_policy(
        init, dtype="bfloat16" if bf16 else "float32", attn_implementation=model_config.attn_implementation
    )
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor, max_length=settings.max_length)
    data = load_sft_data(trajectories_path, encoder, settings.max_bad_fraction, progress)
    work = Path(work_dir)
    key = fingerprint(
        data=files_md5([trajectories_path]),
        init=dir_digest(init),
        model=asdict(model_config),
        settings=asdict(settings),
    )

    model = prepare_for_training(policy.model, model_config)
    collator = TrajectoryCollator(encoder, data.trajectories)
    trainer = SFTTrainer(
        model=model,
        train_dataset=datasets.Dataset.from_dict({"index": list(range(len(data.trajectories)))}),
        args=SFTConfig(**_trainer_settings(work, settings, model_config)),
        data_collator=collator,
        processing_class=policy.tokenizer,
        callbacks=[step_logger(log_fn, progress)],
    )
    quiet(trainer)
    trained = train_resumable(trainer, policy, out_dir, work, key, model_config.lora.enabled)
    curve = logged_curve(trainer, "loss")
    return _sft_metrics(trained, curve, data, collator.tokens_seen, policy, bf16), curve


def _trainer_settings(work: Path, settings: SFTSettings, model_config: ModelConfig) -> dict[str, Any]:
    """SFTConfig's keyword arguments: the shared trainer arguments, epochs and batch sizes."""
    return {
        **trainer_arguments(work, settings, model_config),
        "num_train_epochs": settings.epochs,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "max_length": None,  # our encoder enforces max_length by skipping, never truncating
        "dataset_kwargs": {"skip_prepare_dataset": True},
    }


def _sft_metrics(
    trained, curve: list[dict[str, float]], data: SFTData, tokens_seen: int, policy, bf16: bool
) -> dict[str, Any]:
    """The run's metrics: losses, steps, what was trained on and skipped, throughput and sizes."""
    losses = [p["loss"] for p in curve]
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": float(trained.output.training_loss),
        "steps": int(trained.output.global_step),
        "resumed_from_step": trained.resumed_from_step,
        "trajectories": len(data.trajectories),
        "skipped": dict(sorted(data.skipped.items())),
        "skipped_total": sum(data.skipped.values()),
        "tokens_per_epoch": data.tokens,
        "train_tokens_per_second": tokens_seen / max(trained.seconds, 1e-9),
        "train_seconds": trained.seconds,
        "parameters": count_parameters(policy.model),
        "bf16": bf16,
        "processes": world_size(),
    }


# ---------------------------------------------------------------- format check
def format_check(
    policy_dir: str | os.PathLike,
    samples_path: str | os.PathLike,
    vision,
    num_prompts: int,
    max_new_tokens: int,
    device: str | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """Greedy first turns on held-out prompts: the share that is a well-formed call or `\\boxed{}` answer."""
    import torch

    from videor4.core.io import read_jsonl
    from videor4.policy.rollout import RolloutEngine, RolloutSettings, format_valid_rate, is_well_formed
    from videor4.rumination.trajectory import sample_env

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(policy_dir, device=device)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    rows = list(read_jsonl(samples_path))[:num_prompts]
    if not rows:
        raise SFTDataError(f"{samples_path} holds no held-out prompts")
    # greedy, and no tool is executed: the first turn is what is judged
    settings = RolloutSettings(max_tool_calls=0, max_new_tokens=max_new_tokens, temperature=0.0)
    engine = RolloutEngine(policy.model, encoder, settings)
    rollouts = engine.run([engine.start(row, sample_env(row, vision), i) for i, row in enumerate(rows)])
    texts = [r.turns[0] for r in rollouts]
    results = []
    for r, text in zip(rollouts, texts):
        turn = parse_turn(text)
        results.append(
            {
                "sample_id": r.sample.get("sample_id"),
                "well_formed": is_well_formed(turn),
                "tool": turn.tool_call.name if turn.tool_call else None,
                "answer": turn.answer,
                "error": turn.call_error,
                "text": text,
            }
        )
    return format_valid_rate(texts), results


SFT_CURRICULUM_KEYS = ("drp", "crp")


def sft_settings(params: dict[str, Any], which: str) -> SFTSettings:
    """`sft:` shared keys overridden by `sft.<which>` (drp or crp)."""
    return curriculum_settings(SFTSettings, params, "sft", which, SFT_CURRICULUM_KEYS)
