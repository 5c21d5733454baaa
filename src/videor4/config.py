"""Configs are dataclasses filled from `params.yaml` sections.

`fill(cls, section)` is strict: an unknown key is an error naming the key, so a
typo in params.yaml cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def fill(cls: type[T], section: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a params section (nested dataclasses and Paths converted)."""
    section = dict(section or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ValueError(f"unknown params {where or cls.__name__}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in section.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = fill(hint, value, f"{where}.{key}" if where else key)
        elif value is not None and (hint is Path or Path in typing.get_args(hint)):
            value = Path(value)
        kwargs[key] = value
    return cls(**kwargs)


def section(params: dict[str, Any], dotted: str) -> dict[str, Any]:
    """params['a']['b'] for 'a.b'; {} when absent."""
    node: Any = params
    for part in dotted.split("."):
        node = (node or {}).get(part)
    return dict(node or {})


def vision_config(params: dict[str, Any], overrides: dict[str, Any] | None = None):
    """`vision:`, with `overrides` (e.g. `eval.vision`: the larger crop budget used at evaluation)."""
    from .ops import VisionConfig

    return fill(VisionConfig, {**section(params, "vision"), **(overrides or {})}, "vision")


def synthetic_config(params: dict[str, Any]):
    from .data.synthetic import SyntheticConfig

    cfg = fill(SyntheticConfig, section(params, "synthetic"), "synthetic")
    cfg.seed = int(params.get("seed", cfg.seed))
    # transient text is placed on exactly one of the frames the model will be shown
    cfg.num_shown_frames = vision_config(params).num_frames
    return cfg


def build_config(params: dict[str, Any], out_dir: str | Path = "data/built"):
    from .data.build import BuildConfig
    from .data.synthesis import SynthesisConfig

    data = section(params, "data")
    ocr, sizes, qc = data.get("ocr") or {}, data.get("sizes") or {}, data.get("qc") or {}
    seed = int(params.get("seed", 0))
    synthesis = SynthesisConfig(
        n_drp=int(sizes.get("drp", 200)),
        n_crp=int(sizes.get("crp", 200)),
        max_tool_calls=rollout_limits(params).max_tool_calls,
        seed=seed,
        **qc,
    )
    return BuildConfig(
        out_dir=Path(out_dir),
        ocr_max_videos=int(ocr.get("max_videos", 4)),
        ocr_min_anls=float(ocr.get("min_anls", 0.5)),
        n_rl_d=int(sizes.get("rl_d", 200)),
        n_rl_c=int(sizes.get("rl_c", 200)),
        max_bad_fraction=float(data.get("max_bad_fraction", 0.5)),
        seed=seed,
        synthesis=synthesis,
        vision=vision_config(params),
    )


def model_config(params: dict[str, Any]):
    from .model import ModelConfig

    return fill(ModelConfig, section(params, "model"), "model")


SFT_CURRICULUM_KEYS = ("drp", "crp")
RL_CURRICULUM_KEYS = ("rl_d", "rl_c")


def _curriculum_settings(cls: type[T], params: dict[str, Any], name: str, which: str, known: tuple[str, ...]) -> T:
    """`<name>:` shared keys overridden by `<name>.<which>`; seed from the top level."""
    if which not in known:
        raise ValueError(f"unknown {name} stage {which!r} (known: {', '.join(known)})")
    shared = {k: v for k, v in section(params, name).items() if k not in known}
    merged = {**shared, **section(params, f"{name}.{which}")}
    merged.setdefault("seed", int(params.get("seed", 0)))
    return fill(cls, merged, f"{name}.{which}")


def sft_settings(params: dict[str, Any], which: str):
    """`sft:` shared keys overridden by `sft.<which>` (drp or crp)."""
    from .sft import SFTSettings

    return _curriculum_settings(SFTSettings, params, "sft", which, SFT_CURRICULUM_KEYS)


def grpo_settings(params: dict[str, Any], which: str):
    """`rl:` shared keys overridden by `rl.<which>` (rl_d or rl_c)."""
    from .grpo import GRPOSettings

    return _curriculum_settings(GRPOSettings, params, "rl", which, RL_CURRICULUM_KEYS)


def reward_config(params: dict[str, Any]):
    from .rewards import RewardConfig

    return fill(RewardConfig, section(params, "reward"), "reward")


def rollout_limits(params: dict[str, Any]):
    """`rollout:` limits shared by data synthesis, RL and evaluation."""
    from .rollout import RolloutSettings

    return fill(RolloutSettings, section(params, "rollout"), "rollout")


def eval_settings(params: dict[str, Any]):
    """`eval:` (checkpoints, the budget sweep, the optional eval sets)."""
    from .evaluate import EvalSettings

    settings = fill(EvalSettings, section(params, "eval"), "eval")
    settings.validate()
    return settings

