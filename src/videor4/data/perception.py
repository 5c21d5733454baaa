"""Perception examples for pretraining a base that cannot read yet: what the paper's base model
already does, taught on still scenes from the synthetic generator.

- READ: a crop exactly as the crop tool returns it (the evidence box, jittered as a model's
  box would be, widened by the crop margin, re-encoded at the crop budget) → the text.
- READ_CLIP: a whole frame at the clip budget → a caption bar's text (captions are drawn
  large enough to be read once clipped; panel text is not, so it is never asked that way).
- LOCATE: the low-resolution frame the model is first shown → the normalized box a crop
  call needs, written as the crop call writes it.
- READ_LOWRES (held-out metric only, never trained): READ's questions on the low-resolution
  view; it must stay near chance, which is why zooming matters.

Each image also carries a dense glyph label per merged visual token (the character whose
ink centre lies in the token's 28x28 cell, else `NO_GLYPH`), mapped through the crop and
the resize, for an auxiliary loss on the vision tower.

Every example is drawn from an rng seeded by (seed, stream, index) with a stream of its own
(`TRAIN_STREAM`, `HELD_OUT_STREAM`); videos are seeded by (seed, index), so no example ever
reproduces a video of the dataset.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from videor4.data.synthetic import ALPHABET, Scene, SceneText, SyntheticConfig, background_frame, render_scene
from videor4.rumination.protocol import LOCATE_QUESTION, ToolCall
from videor4.rumination.tools import RuminationEnv, VisionConfig, region_pixels
from videor4.rumination.video import PATCH_FACTOR, VideoFrames, resize_to_budget

TASKS = ("read", "read_clip", "locate")
HELD_OUT_TASKS = ("read", "read_lowres", "read_clip", "locate")
TRAIN_STREAM = 7_000_001  # seed streams: (seed, stream, index); videos use (seed, index)
HELD_OUT_STREAM = 7_000_002
BACKGROUND_STREAM = 7_000_003
BACKGROUNDS = 256  # scenes share a pool of drawn backgrounds: drawing one costs more than the panels
MERGED_CELL = PATCH_FACTOR  # 28 px: one merged visual token (2x2 patches of 14 px)
GLYPH_CLASSES = ALPHABET  # every character either preset draws (digits first)
NO_GLYPH = len(GLYPH_CLASSES)  # the class of a token cell without a glyph centre
BOX_JITTER = 0.03  # a model's box is not the ink box: READ crops are cut around a jittered one


@dataclass
class PerceptionExample:
    task: str
    messages: list[dict[str, Any]]  # user (image + question) → assistant (the answer)
    answer: str
    glyph_labels: list[np.ndarray] = field(default_factory=list)  # per image: (rows, cols) int64 of merged cells
    evidence_box: list[float] | None = None  # normalized, for LOCATE's metric


def example_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _still(scene: Scene) -> VideoFrames:
    h, w = scene.frame.shape[:2]
    return VideoFrames(path="<scene>", indices=[0], frames=[scene.frame], fps=1.0, num_source_frames=1, width=w, height=h)


def glyph_grid(
    image: Image.Image, region_px: tuple[int, int, int, int], glyphs: list[tuple[str, tuple[float, ...]]]
) -> np.ndarray:
    """The glyph class of each merged token of `image`, which shows frame pixels `region_px` resized."""
    left, top, right, bottom = region_px
    sx, sy = image.width / (right - left), image.height / (bottom - top)
    rows, cols = image.height // MERGED_CELL, image.width // MERGED_CELL
    grid = np.full((rows, cols), NO_GLYPH, dtype=np.int64)
    for ch, (x1, y1, x2, y2) in glyphs:
        cx, cy = ((x1 + x2) / 2 - left) * sx, ((y1 + y2) / 2 - top) * sy
        if 0 <= cx < cols * MERGED_CELL and 0 <= cy < rows * MERGED_CELL and ch in GLYPH_CLASSES:
            grid[int(cy // MERGED_CELL), int(cx // MERGED_CELL)] = GLYPH_CLASSES.index(ch)
    return grid


def _all_glyphs(scene: Scene) -> list[tuple[str, tuple[float, ...]]]:
    return [g for t in scene.texts for g in t.glyphs]


def _conversation(image: Image.Image, question: str, answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": answer},
    ]


def _jitter(box: list[float], rng: np.random.Generator, amount: float) -> list[float]:
    x1, y1, x2, y2 = (v + float(rng.uniform(-amount, amount)) for v in box)
    x1, y1 = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)
    return [round(x1, 2), round(y1, 2), round(min(max(x2, x1 + 0.02), 1.0), 2), round(min(max(y2, y1 + 0.02), 1.0), 2)]


def box_text(box: list[float]) -> str:
    """A box as a crop call writes it: two decimals, JSON."""
    return json.dumps([round(v, 2) for v in box])


def crop_example(scene: Scene, target: SceneText, vision: VisionConfig, rng: np.random.Generator) -> PerceptionExample:
    env = RuminationEnv(_still(scene), vision)
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": _jitter(target.box, rng, BOX_JITTER)}))
    if not obs.ok:  # a jittered box that became too small: the exact box always fits
        obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [round(v, 2) for v in target.box]}))
    image = obs.images[0]
    h, w = scene.frame.shape[:2]
    px = region_pixels(obs.regions[0][1], w, h)
    return PerceptionExample(
        "read", _conversation(image, target.question, target.text), target.text, [glyph_grid(image, px, _all_glyphs(scene))]
    )


def whole_frame_example(
    scene: Scene, target: SceneText, task: str, max_pixels: int, min_pixels: int, vision: VisionConfig
) -> PerceptionExample:
    """The whole frame at a budget: READ_CLIP and READ_LOWRES ask for the text, LOCATE for its box."""
    image = resize_to_budget(scene.frame, max_pixels, min_pixels, vision.factor)
    h, w = scene.frame.shape[:2]
    if task == "locate":
        question, answer = LOCATE_QUESTION.format(question=target.question), box_text(target.box)
    else:
        question, answer = target.question, target.text
    return PerceptionExample(
        task, _conversation(image, question, answer), answer, [glyph_grid(image, (0, 0, w, h), _all_glyphs(scene))], list(target.box)
    )


@lru_cache(maxsize=4)
def _backgrounds(world: tuple, seed: int) -> list[np.ndarray]:
    cfg = SyntheticConfig(*world)
    return [background_frame(cfg, example_rng(seed, BACKGROUND_STREAM, i)) for i in range(BACKGROUNDS)]


def make_example(
    task: str, world: SyntheticConfig, vision: VisionConfig, seed: int, stream: int, index: int
) -> PerceptionExample:
    """Example `index` of a stream for one task; the same arguments give the same example."""
    rng = example_rng(seed, stream, index)
    while True:
        # READ_CLIP asks about captions, so its scenes always hold one
        background = _backgrounds(astuple(world), seed)[int(rng.integers(0, BACKGROUNDS))]
        scene = render_scene(world, rng, caption_chance=1.0 if task == "read_clip" else 0.4, background=background)
        pool = [t for t in scene.texts if t.kind == "caption"] if task == "read_clip" else scene.texts
        if pool:
            break
    target = pool[int(rng.integers(0, len(pool)))]
    if task == "read":
        return crop_example(scene, target, vision, rng)
    if task == "read_clip":
        return whole_frame_example(scene, target, task, vision.clip_max_pixels, vision.clip_min_pixels, vision)
    if task in ("locate", "read_lowres"):
        return whole_frame_example(scene, target, task, vision.frame_max_pixels, vision.frame_min_pixels, vision)
    raise ValueError(f"unknown perception task {task!r} (known: {', '.join(HELD_OUT_TASKS)})")


def task_of(index: int, mix: dict[str, float], seed: int) -> str:
    """The task of training example `index`, drawn by the mix's weights (seeded, so resumable)."""
    names = sorted(mix)
    weights = np.array([mix[n] for n in names], dtype=float)
    u = example_rng(seed, TRAIN_STREAM + 1, index).random()
    return names[int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))]
