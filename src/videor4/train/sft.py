"""Supervised fine-tuning on rumination trajectories (DRP-SFT, CRP-SFT), on TRL's SFTTrainer.

`target: direct` (stage direct_sft) trains the single-pass baseline instead: the same DRP
questions, each answered in one turn with no tool call (`direct_trajectory`), on the same budget.

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
from videor4.core.params import ParamsError, curriculum_settings
from videor4.policy.encoding import EncodingError, PolicyEncoder
from videor4.policy.model import ModelConfig, count_parameters, load_policy, prepare_for_training
from videor4.rumination.protocol import format_assistant_turn, parse_turn
from videor4.rumination.trajectory import Trajectory, direct_trajectory, trajectory_messages
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
    """One SFT stage's training settings (`sft:` shared keys, overridden by `sft.drp` / `sft.crp` /
    `sft.direct`)."""

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
    # rumination: the trajectories as written | direct: each answered in one turn, no tool (the baseline)
    target: str = "rumination"

    def __post_init__(self) -> None:
        check_target(self.target)


SFT_TARGETS = ("rumination", "direct")


def check_target(target: str) -> None:
    """An SFT target is one of `SFT_TARGETS`; the error names the one given."""
    if target not in SFT_TARGETS:
        raise ParamsError(f"params sft target: {target!r} is not one of {', '.join(SFT_TARGETS)}")


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


def _checked(
    line: str, where: str, encoder: PolicyEncoder, target: str
) -> tuple[Trajectory | None, tuple[str, str] | None, int]:
    """(the trajectory to train on, the problem that skips it, its tokens) for one JSONL row.

    With target direct the written trajectory is checked and encoded first, as drp_sft does, so
    the baseline keeps exactly the questions drp_sft keeps; then its one-turn form is encoded."""
    try:
        traj = Trajectory.from_dict(json.loads(line))
    except (ValueError, KeyError, TypeError) as exc:
        return None, ("malformed_row", f"{where}: {exc}"), 0
    problem = trajectory_problem(traj)
    if problem is not None:
        return traj, problem, 0
    trained = [traj] if target == "rumination" else [traj, direct_trajectory(traj)]
    try:
        tokens = [len(encoder.encode(trajectory_messages(t))) for t in trained]
    except EncodingError as exc:
        return traj, (exc.reason, f"{traj.traj_id}: {exc}"), 0
    except READ_ERRORS as exc:  # a corrupt video surfaces here, while decoding the shown frames
        # only read errors: anything else is a bug, which must not hide under max_bad_fraction
        return traj, ("unreadable_video", f"{traj.traj_id}: {exc}"), 0
    return trained[-1], None, tokens[-1]


def load_sft_data(
    path: str | os.PathLike,
    encoder: PolicyEncoder,
    max_bad_fraction: float,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    target: str = "rumination",
) -> SFTData:
    """Read and check every trajectory; skip bad ones with a counted reason, fail past `max_bad_fraction`.

    `target` "direct" gives each kept trajectory as `direct_trajectory` (the single-pass baseline)."""
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"trajectory file {path} does not exist")
    check_target(target)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tick = progress("check trajectories", len(lines)) if progress else None
    data = SFTData(trajectories=[], total=len(lines))
    examples: list[str] = []
    for lineno, line in enumerate(lines, 1):
        traj, problem, tokens = _checked(line, f"{path}:{lineno}", encoder, target)
        if problem is None:
            data.trajectories.append(traj)
            data.tokens += tokens
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
    data = load_sft_data(trajectories_path, encoder, settings.max_bad_fraction, progress, settings.target)
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
    target: str = "rumination",
) -> tuple[float, list[dict[str, Any]]]:
    """Greedy first turns on held-out prompts: the share that is well-formed.

    For a rumination model that is a valid call or one `\\boxed{}` answer; for a direct model
    (`target` "direct", trained to answer without tools) only the answer counts: the share of
    prompts answered in the answer format."""
    import torch

    from videor4.core.io import read_jsonl
    from videor4.policy.rollout import RolloutEngine, RolloutSettings, is_well_formed
    from videor4.rumination.trajectory import sample_env

    check_target(target)
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
    results = []
    for r in rollouts:
        text = r.turns[0]
        turn = parse_turn(text)
        called_when_direct = target == "direct" and turn.tool_call is not None  # off-target
        results.append(
            {
                "sample_id": r.sample.get("sample_id"),
                "well_formed": is_well_formed(turn) and not called_when_direct,
                "tool": turn.tool_call.name if turn.tool_call else None,
                "answer": turn.answer,
                "error": turn.call_error,
                "text": text,
            }
        )
    return sum(r["well_formed"] for r in results) / len(results), results


SFT_CURRICULUM_KEYS = ("drp", "crp", "direct")


def sft_settings(params: dict[str, Any], which: str) -> SFTSettings:
    """`sft:` shared keys overridden by `sft.<which>` (drp, crp, or direct: the single-pass baseline,
    drp's settings with `target: direct`)."""
    return curriculum_settings(SFTSettings, params, "sft", which, SFT_CURRICULUM_KEYS)
