"""Params sections fill dataclasses, strictly.

Every section of params.yaml is read by `fill` into the dataclass that owns it (the
vision budgets into `VisionConfig`, `sft:` into `SFTSettings`, ...).  An unknown or
mistyped key is a `ParamsError` naming the key and its section, so a typo cannot fall
back to a default in silence.  The builders for each section live beside their
dataclass; this module knows none of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from videor4.core.io import is_int

T = TypeVar("T")


class ParamsError(ValueError):
    """A params section that does not fit its dataclass; the message names the key."""


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` fits a simple type hint (unknown hints accept anything)."""
    if hint is Any or value is None and _optional(hint):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    return True


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def fill(cls: type[T], section: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a params section (nested dataclasses and Paths converted)."""
    where = where or cls.__name__
    if section is not None and not isinstance(section, Mapping):
        raise ParamsError(f"params {where}: expected a mapping of keys, got {section!r}")
    section = dict(section or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ParamsError(f"unknown params {where}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in section.items():
        hint = hints[key]
        nested = next((h for h in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(h)), None)
        if nested is not None and isinstance(value, Mapping):
            value = fill(nested, value, f"{where}.{key}")
        elif nested is not None and value is not None and not isinstance(value, nested):
            raise ParamsError(f"params {where}.{key}: expected {nested.__name__}, got {value!r}")
        elif not _accepts(hint, value):
            raise ParamsError(f"params {where}.{key}: expected {_hint_name(hint)}, got {value!r}")
        elif value is not None and (hint is Path or Path in typing.get_args(hint)):
            value = Path(value)
        elif hint is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def section(params: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """params['a']['b'] for 'a.b'; {} when absent."""
    node: Any = params
    for part in dotted.split("."):
        node = (node or {}).get(part) if isinstance(node, Mapping) else None
    if node is not None and not isinstance(node, Mapping):
        raise ParamsError(f"params {dotted}: expected a mapping of keys, got {node!r}")
    return dict(node or {})


def curriculum_settings(
    cls: type[T], params: Mapping[str, Any], name: str, which: str, known: tuple[str, ...]
) -> T:
    """`<name>:` shared keys overridden by `<name>.<which>` (one curriculum stage); the seed is the
    top-level `train_seed` (else `seed`), so a seed sweep shares the data and the pretrained base."""
    if which not in known:
        raise ParamsError(f"unknown {name} stage {which!r} (known: {', '.join(known)})")
    shared = {k: v for k, v in section(params, name).items() if k not in known}
    merged = {**shared, **section(params, f"{name}.{which}")}
    merged.setdefault("seed", int(params.get("train_seed", params.get("seed", 0))))
    return fill(cls, merged, f"{name}.{which}")
