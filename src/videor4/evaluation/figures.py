"""The pipeline's figures as PNG (matplotlib): training curves, the test-time scaling curve with
its 95 % band, and accuracy per checkpoint and mode with its interval.

Each function takes the stage outputs as they are written (loss curves: lists of logged rows;
`eval.json`'s per-set summaries) and returns a matplotlib Figure; `write_figures` draws them all
and saves them.  Rendering uses the Agg backend: no display, and the same bytes for the same
numbers (PNG metadata carries no date).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor4.core.io import atomic_write_bytes

SINGLE_PASS, RUMINATION = "single_pass", "rumination"  # as evaluate.py names the modes
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless, and the same pixels on every machine
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [
        (float(r["step"]), float(r[key]))
        for r in rows
        if r.get(key) is not None and r.get("step") is not None
    ]
    return [x for x, _ in points], [y for _, y in points]


def training_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], key: str, title: str, ylabel: str):
    """One panel per stage (pretraining's loss is on another scale than SFT's): `key` against step."""
    plt = _pyplot()
    names = [n for n, rows in curves.items() if _series(rows, key)[0]]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        xs, ys = _series(curves[name], key)
        ax.plot(xs, ys, lw=1.4)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rl_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Reward and (sampled, training-batch) accuracy per GRPO step, one row per RL stage."""
    plt = _pyplot()
    names = list(curves)
    fig, axes = plt.subplots(max(len(names), 1), 2, figsize=(8.5, 3.0 * max(len(names), 1)), squeeze=False)
    for row, name in zip(axes, names):
        for ax, key in zip(row, ("reward", "accuracy")):
            xs, ys = _series(curves[name], key)
            ax.plot(xs, ys, marker="o", ms=3, lw=1.4)
            ax.set_title(f"{name}: {key}")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    fig.suptitle("GRPO: reward and accuracy of the sampled rollouts")
    fig.tight_layout()
    return fig


def scaling_curve(summaries: Mapping[str, Mapping[str, Any]], title: str):
    """Accuracy against the allowed rumination steps per checkpoint, with its 95 % band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, summary in summaries.items():
        points = summary.get("scaling") or []
        if not points:
            continue
        steps = [p["steps"] for p in points]
        ax.plot(steps, [100 * p["acc"] for p in points], marker="o", ms=3, lw=1.4, label=name)
        ax.fill_between(
            steps, [100 * p["acc_ci"][0] for p in points], [100 * p["acc_ci"][1] for p in points], alpha=0.15
        )
    n = next((p["n"] for s in summaries.values() for p in s.get("scaling") or []), 0)
    ax.set_xlabel("allowed rumination steps (tool calls)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title} (n={n}; bands: 95 % Wilson)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_bars(summaries: Mapping[str, Mapping[str, Any]], title: str):
    """Accuracy per checkpoint, single pass beside rumination, with 95 % intervals."""
    plt = _pyplot()
    names = list(summaries)
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * max(len(names), 1) + 1.4))
    height = 0.38
    for offset, mode, label in (
        (-height / 2, SINGLE_PASS, "single pass"),
        (height / 2, RUMINATION, "rumination"),
    ):
        cells = [summaries[n][mode] for n in names]
        ys = [i + offset for i in range(len(names))]
        values = [100 * c["acc"] for c in cells]
        errors = [
            [100 * (c["acc"] - c["acc_ci"][0]) for c in cells],
            [100 * (c["acc_ci"][1] - c["acc"]) for c in cells],
        ]
        ax.barh(ys, values, height=height, xerr=errors, capsize=3, label=label)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    n = next((summaries[n][RUMINATION]["n"] for n in names), 0)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"{title} (n={n}; whiskers: 95 % Wilson)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


FIGURES = {  # file name → what it shows (README and the eval table link them)
    "sft_loss.png": "training loss: perception pretraining, direct-SFT (baseline), DRP-SFT, CRP-SFT",
    "rl_curves.png": "GRPO reward and accuracy per step: RL_d, RL_c",
    "scaling.png": "test-time scaling: accuracy by allowed rumination steps, with 95 % bands",
    "accuracy.png": "accuracy per checkpoint, single pass vs rumination, with 95 % intervals",
}


def pipeline_figures(
    sft_curves: Mapping[str, Sequence[Mapping[str, Any]]],
    rl: Mapping[str, Sequence[Mapping[str, Any]]],
    eval_summary: Mapping[str, Any],
    eval_set: str = "synthetic",
) -> dict[str, Any]:
    """{file name: Figure} for everything `FIGURES` lists (the eval figures on `eval_set`, titled with
    the split the eval metrics scored: their "split", test when they predate it)."""
    split = str(eval_summary.get("split") or "test")
    summaries = {
        k: v
        for k, v in (eval_summary.get(eval_set) or {}).items()
        if isinstance(v, Mapping) and SINGLE_PASS in v
    }
    return {
        "sft_loss.png": training_curves(sft_curves, "loss", "Training loss", "loss"),
        "rl_curves.png": rl_curves(rl),
        "scaling.png": scaling_curve(summaries, f"Test-time scaling, {eval_set} {split}"),
        "accuracy.png": accuracy_bars(summaries, f"Accuracy, {eval_set} {split}"),
    }


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG atomically, with no timestamp in its metadata (same numbers, same bytes)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
