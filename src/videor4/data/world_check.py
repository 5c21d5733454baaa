"""The world checks itself: is the small text really unreadable in the low-resolution view?

The task's premise is that the frames the model is shown first (`vision.frame_max_pixels`: a
448x252 frame shown at 84x56) hide the codes, so that reading them needs a crop.  This module
measures that claim on a generated dataset (manifest.jsonl + samples.jsonl + videos/), with
nothing learned beyond a linear probe:

- `lowres_colour_decoder_acc`: a no-learning decoder.  Where the preset inks each glyph in a
  colour fixed by the glyph (`synthetic.DIGIT_COLOURS`), each character cell of the 84x56 view
  is read as the palette colour that best explains its most non-panel pixels.  Exact match
  over whole texts of the test split; null for presets without a glyph palette.
- `lowres_probe_acc_grey` / `_colour`: a softmax regression on each character cell's patch of
  the 84x56 view (area-resampled to `probe_size`, as distance from the panel colour around the
  text, so light-on-dark and dark-on-light ink look alike), trained on train-split videos, scored on
  test-split videos (val videos, where the world has them, are left out): glyph accuracy and
  whole-text exact accuracy.
- `crop_probe_acc_grey`: the same probe on the cell's patch of the source-resolution frame
  (what a crop sees).  It should be high; if it is not, the probe, not the world, is broken.

Frames are decoded from the mp4s and downscaled by `RuminationEnv` itself, so the view is
exactly the one the model gets.  An item is one main text (titles excluded) on one shown
frame; the same string appears on several shown frames, so items are not independent and the
intervals (Wilson, `core.statistics`) are somewhat optimistic.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videor4.core.io import read_jsonl
from videor4.core.params import fill, section
from videor4.core.schema import Sample, VideoRecord
from videor4.core.statistics import Estimate, wilson
from videor4.data.synthetic import DIGIT_COLOURS, KIND_NAMES, NEUTRAL_PANEL, Style
from videor4.rumination.tools import RuminationEnv, VisionConfig
from videor4.rumination.video import load_frames, uniform_indices

Box = tuple[float, float, float, float]
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class WorldCheckConfig:
    """`world_check:` in params.yaml."""

    max_texts_per_split: int = 400  # (text, shown frame) items per split, drawn with `seed`
    probe_size: list[int] = field(default_factory=lambda: [8, 6])  # rows, cols of a glyph's patch
    probe_steps: int = 300  # full-batch Adam steps of the softmax regression
    probe_lr: float = 0.05
    probe_l2: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.probe_size) != 2 or min(self.probe_size) < 1:
            raise ValueError(f"world_check.probe_size: expected [rows, cols] >= 1, got {self.probe_size}")
        if self.max_texts_per_split < 1 or self.probe_steps < 1:
            raise ValueError("world_check: max_texts_per_split and probe_steps must be >= 1")


def world_check_config(params: dict[str, Any]) -> WorldCheckConfig:
    return fill(WorldCheckConfig, section(params, "world_check"), "world_check")


@dataclass
class TextItem:
    """One main text on one shown frame, with where it lies (source pixels)."""

    video: str
    split: str
    frame: int
    text: str
    box: Box
    group: str  # caption | panel (every other kind: signs, plates, slides, ...)


@dataclass
class ItemFeatures:
    """What the decoder and the probes see of one item: one row per character."""

    item: TextItem
    view_colour: np.ndarray  # (chars, rows * cols * 3): contrast to the panel, low-resolution view
    view_grey: np.ndarray  # (chars, rows * cols)
    crop_grey: np.ndarray  # (chars, rows * cols), source-resolution frame
    decoded: str | None  # the colour decoder's reading (None: no palette)


# ---------------------------------------------------------------- geometry
def character_cells(text: str, box: Box) -> list[Box]:
    """Each character's cell: the text's ink box `box` (pixels) split evenly, full height.

    The generator draws one character at a time at the advance of the prefix (`synthetic._draw_panel`
    with `synthetic.glyph_boxes`' layout).  DejaVu Sans Bold digits share one advance width, so the
    readable preset's codes are monospaced and an even split lands on each glyph up to its side
    bearings.  Legacy codes mix letters of other widths, where the split is approximate; cells cut
    from the true glyphs' widths would be more exact but would tell the reader which glyphs they are
    (a narrow "1" gets a narrow cell), so the split uses nothing but the box and the text's length.
    """
    x1, y1, x2, y2 = box
    step = (x2 - x1) / max(len(text), 1)
    return [(x1 + i * step, y1, x1 + (i + 1) * step, y2) for i in range(len(text))]


def scale_box(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def sample_patch(image: np.ndarray, box: Box, rows: int, cols: int, sub: int = 4) -> np.ndarray:
    """The float box `box` (pixels, x1 y1 x2 y2) of `image` (H x W x C) area-resampled to rows x cols.

    Each output cell averages sub x sub bilinear samples, so thin strokes count by their area.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    xs = x1 + (np.arange(cols * sub) + 0.5) * (x2 - x1) / (cols * sub) - 0.5  # pixel-centre coordinates
    ys = y1 + (np.arange(rows * sub) + 0.5) * (y2 - y1) / (rows * sub) - 0.5
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    x0, y0 = xs.astype(int), ys.astype(int)  # floor: the coordinates are >= 0
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    x1i, y1i = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1i] * fx
    bottom = img[y1i][:, x0] * (1 - fx) + img[y1i][:, x1i] * fx
    samples = top * (1 - fy) + bottom * fy
    return samples.reshape(rows, sub, cols, sub, -1).mean(axis=(1, 3))


# ---------------------------------------------------------------- the no-learning decoder
def glyph_palette(style: Style) -> tuple[dict[str, tuple[int, int, int]], tuple[int, int, int]] | None:
    """(ink colour per glyph, panel colour) where the preset fixes a glyph's ink; None otherwise."""
    return (dict(DIGIT_COLOURS), NEUTRAL_PANEL) if style.digit_colours else None


def _segment_distance(pixels: np.ndarray, background: np.ndarray, inks: np.ndarray) -> np.ndarray:
    """(pixels, inks): distance of each pixel to the segment panel -> ink (a downscaled stroke blends
    its ink with the panel, so its colour lies on that segment)."""
    direction = inks - background  # (K, 3)
    rel = pixels - background  # (P, 3)
    t = np.clip(rel @ direction.T / np.maximum((direction**2).sum(1), 1e-6), 0.0, 1.0)  # (P, K)
    nearest = background + t[..., None] * direction[None]  # (P, K, 3)
    return np.linalg.norm(pixels[:, None, :] - nearest, axis=-1)


def decode_by_palette(
    view: np.ndarray,
    cells: list[Box],
    palette: dict[str, tuple[int, int, int]],
    background: tuple[int, int, int],
    top_k: int = 3,
) -> str:
    """Read each cell (view pixels) as the glyph whose ink best explains its `top_k` most non-panel
    pixels.  No learning: only the preset's own palette."""
    glyphs = list(palette)
    inks = np.array([palette[g] for g in glyphs], dtype=np.float32)
    bg = np.array(background, dtype=np.float32)
    h, w = view.shape[:2]
    out = []
    for x1, y1, x2, y2 in cells:
        # pixels whose centres lie in the cell; at least the one under its centre
        c0, c1 = max(int(np.ceil(x1 - 0.5)), 0), min(int(np.floor(x2 - 0.5)), w - 1)
        r0, r1 = max(int(np.ceil(y1 - 0.5)), 0), min(int(np.floor(y2 - 0.5)), h - 1)
        if c1 < c0 or r1 < r0:
            c0 = c1 = min(max(int((x1 + x2) / 2), 0), w - 1)
            r0 = r1 = min(max(int((y1 + y2) / 2), 0), h - 1)
        pixels = view[r0 : r1 + 1, c0 : c1 + 1].reshape(-1, 3).astype(np.float32)
        inkiest = pixels[np.argsort(-np.linalg.norm(pixels - bg, axis=1))[:top_k]]
        out.append(glyphs[int(np.argmin(_segment_distance(inkiest, bg, inks).sum(0)))])
    return "".join(out)


# ---------------------------------------------------------------- items and features
def load_items(root: Path, num_shown: int) -> list[TextItem]:
    """Every main text (titles excluded) on every frame the model is shown, from the dataset's
    manifest; a text is a caption when it is drawn as one or a question names its caption bar."""
    records = [VideoRecord.from_dict(r) for r in read_jsonl(root / "manifest.jsonl")]
    samples = [Sample.from_dict(r) for r in read_jsonl(root / "samples.jsonl")]
    caption_name = KIND_NAMES["caption"]
    captions = {
        (s.video, e.text) for s in samples for e in s.evidence if (e.label or "").endswith(caption_name)
    }
    items = []
    for record in records:
        shown = set(uniform_indices(record.num_frames, num_shown))
        for t in record.text_boxes:
            if t.frame not in shown or t.role == "title":
                continue
            caption = t.role == "caption" or (record.path, t.text) in captions
            box = scale_box(tuple(t.bbox), record.width, record.height)
            items.append(
                TextItem(record.path, record.split, t.frame, t.text, box, "caption" if caption else "panel")
            )
    return items


def select_items(items: list[TextItem], per_split: int, seed: int) -> list[TextItem]:
    """At most `per_split` items of each split, drawn with `seed`, in (video, frame) order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for split in ("train", "test"):
        pool = [it for it in items if it.split == split]
        chosen += [pool[int(i)] for i in sorted(rng.permutation(len(pool))[:per_split])]
    return sorted(chosen, key=lambda it: (it.video, it.frame, it.box))


def _video_path(root: Path, path: str) -> Path:
    """Manifest paths name the dataset from the working directory; a moved dataset still has videos/."""
    as_given = Path(path)
    return as_given if as_given.is_file() else root / "videos" / as_given.name


def panel_colour(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """The median colour of the ring `margin` pixels wide around `box`: the panel behind the text."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    outer = [
        int(np.floor(x1 - margin)),
        int(np.floor(y1 - margin)),
        int(np.ceil(x2 + margin)),
        int(np.ceil(y2 + margin)),
    ]
    c0, r0, c1, r1 = max(outer[0], 0), max(outer[1], 0), min(outer[2], w), min(outer[3], h)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    inside = (cc + 0.5 > x1) & (cc + 0.5 < x2) & (rr + 0.5 > y1) & (rr + 0.5 < y2)
    ring = image[r0:r1, c0:c1][~inside]
    return np.median(ring, axis=0).astype(np.float32) if len(ring) else np.zeros(image.shape[2], np.float32)


def _contrast(
    image: np.ndarray, text_box: Box, cells: list[Box], size: list[int], margin: float
) -> np.ndarray:
    """(chars, rows, cols, C): each cell's patch as its distance from the panel colour, in [0, 1].

    Legacy panels put dark ink on light panels and light ink on dark ones; a linear probe on raw
    pixels would have to learn each glyph twice, on contrast it learns the shape once.
    """
    panel = panel_colour(image, text_box, margin)
    return np.stack([np.abs(sample_patch(image, c, *size) - panel) for c in cells]) / 255.0


def _item_features(
    item: TextItem, source: np.ndarray, view: np.ndarray, size: list[int], palette: Any
) -> ItemFeatures:
    sx, sy = view.shape[1] / source.shape[1], view.shape[0] / source.shape[0]
    cells = character_cells(item.text, item.box)
    view_cells = [scale_box(c, sx, sy) for c in cells]
    # the ring: 3 source pixels, inside the padding around every text; 1 pixel of the view
    colour = _contrast(view, scale_box(item.box, sx, sy), view_cells, size, 1.0)
    grey_view = _contrast(
        (view @ GREY_WEIGHTS)[..., None], scale_box(item.box, sx, sy), view_cells, size, 1.0
    )
    grey_crop = _contrast((source @ GREY_WEIGHTS)[..., None], item.box, cells, size, 3.0)
    return ItemFeatures(
        item=item,
        view_colour=colour.reshape(len(cells), -1),
        view_grey=grey_view.reshape(len(cells), -1),
        crop_grey=grey_crop.reshape(len(cells), -1),
        decoded=decode_by_palette(view, view_cells, *palette) if palette else None,
    )


def extract_features(
    root: Path, items: list[TextItem], vision: VisionConfig, size: list[int], palette: Any
) -> tuple[list[ItemFeatures], tuple[int, int], tuple[int, int]]:
    """Each item's features, and the (width, height) of the view and of the source frames.

    The view is `RuminationEnv`'s own first images of the decoded video: the model's low-res frames.
    """
    by_video: dict[str, list[TextItem]] = defaultdict(list)
    for it in items:
        by_video[it.video].append(it)
    out: list[ItemFeatures] = []
    view_size = source_size = (0, 0)
    for video, video_items in by_video.items():
        frames = load_frames(_video_path(root, video), num_frames=vision.num_frames, cache=None)
        views = [np.asarray(im.convert("RGB")) for im in RuminationEnv(frames, vision).initial_images()]
        position = {f: i for i, f in enumerate(frames.indices)}
        for it in video_items:
            i = position[it.frame]
            out.append(_item_features(it, frames.frames[i], views[i], size, palette))
        view_size, source_size = (views[0].shape[1], views[0].shape[0]), (frames.width, frames.height)
    return out, view_size, source_size


# ---------------------------------------------------------------- the linear probe
@dataclass
class SoftmaxProbe:
    """Multinomial logistic regression on standardized features (full-batch Adam, zero init)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, classes: int, steps: int, lr: float, l2: float
    ) -> "SoftmaxProbe":
        x = x.astype(np.float64)
        mean, std = x.mean(0), x.std(0) + 1e-3
        z = (x - mean) / std
        onehot = np.eye(classes)[y]
        params = [np.zeros((z.shape[1], classes)), np.zeros(classes)]
        moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
        for step in range(1, steps + 1):
            logits = z @ params[0] + params[1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            residual = (p / p.sum(1, keepdims=True) - onehot) / len(z)
            grads = [z.T @ residual + l2 * params[0], residual.sum(0)]
            for param, grad, (m, v) in zip(params, grads, moments):
                m[:] = 0.9 * m + 0.1 * grad
                v[:] = 0.999 * v + 0.001 * grad**2
                param -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        return cls(mean, std, params[0], params[1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(((x - self.mean) / self.std) @ self.weights + self.bias, axis=1)


def probe_correct(
    train: list[ItemFeatures], test: list[ItemFeatures], view: str, cfg: WorldCheckConfig
) -> tuple[list[list[bool]], int]:
    """Per test item, whether the probe (trained on `train`'s `view` features) reads each glyph;
    and the number of glyph classes it learned (test glyphs never seen in training count as wrong)."""
    classes = sorted({ch for f in train for ch in f.item.text})
    index = {ch: i for i, ch in enumerate(classes)}
    x = np.concatenate([getattr(f, view) for f in train])
    y = np.array([index[ch] for f in train for ch in f.item.text])
    probe = SoftmaxProbe.fit(x, y, len(classes), cfg.probe_steps, cfg.probe_lr, cfg.probe_l2)
    return [
        [classes[p] == ch for p, ch in zip(probe.predict(getattr(f, view)), f.item.text)] for f in test
    ], len(classes)


# ---------------------------------------------------------------- metrics
def estimate(ok: list[bool]) -> dict[str, Any]:
    """An accuracy with its 95 % Wilson interval and n."""
    e: Estimate = wilson(sum(ok), len(ok))
    return {"acc": round(e.value, 4), "ci": [round(e.low, 4), round(e.high, 4)], "n": e.n}


def summary(correct: list[list[bool]]) -> dict[str, Any]:
    """Glyph accuracy and whole-text exact accuracy of per-item, per-glyph correctness."""
    return {
        "glyph": estimate([ok for item in correct for ok in item]),
        "text": estimate([all(c) for c in correct]),
    }


def _by_group(test: list[ItemFeatures], readers: dict[str, list[list[bool]] | None]) -> dict[str, Any]:
    """Whole-text accuracy of each reader on each group of texts (caption bars, other panels)."""
    out: dict[str, Any] = {}
    for group in sorted({f.item.group for f in test}):
        keep = [i for i, f in enumerate(test) if f.item.group == group]
        out[group] = {
            name: None if correct is None else estimate([all(correct[i]) for i in keep])
            for name, correct in readers.items()
        }
    return out


def _counts(feats: list[ItemFeatures]) -> dict[str, dict[str, int]]:
    splits = ("train", "test")
    return {
        "n_texts": {s: sum(f.item.split == s for f in feats) for s in splits},
        "n_unique_texts": {
            s: len({(f.item.video, f.item.text) for f in feats if f.item.split == s}) for s in splits
        },
        "n_glyphs": {s: sum(len(f.item.text) for f in feats if f.item.split == s) for s in splits},
    }


def world_check(root: Path, vision: VisionConfig, style: Style, cfg: WorldCheckConfig) -> dict[str, Any]:
    """The world-check metrics of the dataset at `root` (see the module docstring)."""
    t0 = time.perf_counter()
    root = Path(root)
    items = select_items(load_items(root, vision.num_frames), cfg.max_texts_per_split, cfg.seed)
    palette = glyph_palette(style)
    feats, view_size, source_size = extract_features(root, items, vision, cfg.probe_size, palette)
    train = [f for f in feats if f.item.split == "train"]
    test = [f for f in feats if f.item.split == "test"]
    if not train or not test:
        raise ValueError(
            f"world check needs texts in both splits, got {len(train)} train and {len(test)} test"
        )
    decoder = [[a == b for a, b in zip(f.decoded, f.item.text)] for f in test] if palette else None
    grey, n_classes = probe_correct(train, test, "view_grey", cfg)
    colour, _ = probe_correct(train, test, "view_colour", cfg)
    crop, _ = probe_correct(train, test, "crop_grey", cfg)
    readers = {
        "lowres_colour_decoder": decoder,
        "lowres_probe_grey": grey,
        "lowres_probe_colour": colour,
        "crop_probe_grey": crop,
    }
    return {
        "view_size": list(view_size),
        "source_size": list(source_size),
        **_counts(feats),
        "n_classes": n_classes,
        "probe_size": list(cfg.probe_size),
        "lowres_colour_decoder_acc": None if decoder is None else estimate([all(c) for c in decoder]),
        "lowres_colour_decoder_glyph_acc": None if decoder is None else summary(decoder)["glyph"],
        "lowres_probe_acc_grey": summary(grey),
        "lowres_probe_acc_colour": summary(colour),
        "crop_probe_acc_grey": summary(crop),
        "by_group": _by_group(test, readers),
        "seconds": round(time.perf_counter() - t0, 2),
    }
