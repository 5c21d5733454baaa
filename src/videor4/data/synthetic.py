"""A deterministic procedural source of text-rich videos and questions about them.

Each video is a moving gradient background with 3-5 coloured "panels" (signs,
caption bars, slides, app screens, licence plates, scoreboards, price tags)
carrying short codes, small in the model's low-resolution view of the frame, so
that answering needs clipping and cropping.  Some videos hold a caption that
flashes in exactly one shown frame, a plate whose code changes over time, or two
numbers to compare.

Two drawings (`synthetic.preset`): `readable`, the embedded default: codes of three digits drawn about one
merged 28x28 visual token per glyph once cropped, each digit in its own
saturated colour on a neutral panel framed in the panel's named colour, and
caption bars larger still, so that their text is legible once the frame is
clipped; and `legacy`, the original drawing: codes from a small, visually distinct
alphabet at 10-14 px (two glyphs per token).  A tiny model learns to read the
readable codes in minutes on a CPU and the legacy ones it does not (docs/DESIGN.md §8).  A candidate,
`hidden`, draws the readable codes at ~8 px in one font, each text in one ink that does not name its
digits, so that no reader of the 84x56 view gets them; its crops need a finer `vision.box_step` and
`crop_margin` (benchmarks/world_design.py).

Everything is drawn from an rng seeded by (seed, video index), so the same
config gives byte-identical mp4s and identical records, and video i does not
depend on how many videos are generated.  `render_scene` draws one still frame
from the same generator for perception pretraining, from its own seed stream.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videor4.core.io import atomic_open
from videor4.core.params import fill, section
from videor4.core.schema import OPTION_LETTERS, Evidence, Sample, TextBox, VideoRecord
from videor4.rumination.tools import vision_config
from videor4.rumination.video import uniform_indices

# Digits plus capitals whose shapes differ a lot (no O/0, I/1, S/5, B/8 pairs).
ALPHABET = "0123456789AEHKMPTX"
DIGITS = "0123456789"
FONT_DIR = "/usr/share/fonts/truetype"
FONT_PATH = f"{FONT_DIR}/dejavu/DejaVuSans-Bold.ttf"
# bold faces of other shapes (serifs, slab mono), for presets that draw each text in one of several fonts
BOLD_FONTS = (
    FONT_PATH,
    f"{FONT_DIR}/dejavu/DejaVuSerif-Bold.ttf",
    f"{FONT_DIR}/dejavu/DejaVuSansMono-Bold.ttf",
    f"{FONT_DIR}/liberation/LiberationSans-Bold.ttf",
    f"{FONT_DIR}/liberation/LiberationSerif-Bold.ttf",
    f"{FONT_DIR}/liberation/LiberationMono-Bold.ttf",
)
CODE_FONT_SIZES = (15, 16, 17, 18)  # ink height 11-13 px for caps and digits
TITLE_FONT_SIZE = 13

# Named, mutually distinct panel colours; each is used at most once per video so
# that "colour + kind" names a panel unambiguously.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "blue": (35, 80, 210),
    "green": (30, 150, 60),
    "yellow": (245, 215, 40),
    "orange": (250, 140, 20),
    "purple": (130, 50, 170),
    "pink": (245, 150, 195),
    "cyan": (60, 205, 225),
    "white": (240, 240, 240),
}
DARK_TEXT = (15, 15, 15)
LIGHT_TEXT = (250, 250, 250)

KIND_NAMES = {
    "sign": "sign",
    "caption": "caption bar",
    "slide": "slide",
    "app": "app screen",
    "plate": "license plate",
    "scoreboard": "scoreboard",
    "price": "price tag",
}
TITLES = {
    "slide": ("AGENDA", "SUMMARY", "NOTES", "RESULTS"),
    "app": ("LOGIN", "STATUS", "MENU", "PROFILE"),
    "scoreboard": ("SCORE", "HOME", "AWAY"),
    "price": ("PRICE", "SALE"),
}
READ_TEMPLATES = {
    "sign": "What code is shown on the {c} sign?",
    "caption": "What code appears in the {c} caption bar?",
    "slide": "What code is written on the {c} slide?",
    "app": "What code is displayed on the {c} app screen?",
    "plate": "What is the plate number on the {c} license plate?",
    "scoreboard": "What number is shown on the {c} scoreboard?",
    "price": "What price is shown on the {c} price tag?",
}
NUMBER_KINDS = ("scoreboard", "price")
FILLER_KINDS = ("sign", "slide", "app", "plate", "scoreboard", "price")
QUESTION_KINDS = ("read", "transient", "compare", "count")


@dataclass(frozen=True)
class Style:
    """How a preset draws its text and panels."""

    alphabet: str  # characters of codes
    code_lengths: tuple[int, int]  # [low, high) of a code's length
    letter_required: bool  # codes keep a letter so they do not read as numbers
    number_range: tuple[int, int]  # [low, high) of scoreboard / price numbers
    code_font_sizes: tuple[int, ...]
    caption_font_size: int | None  # None: the panel's size
    titles: bool  # slides, app screens, scoreboards and price tags carry a small title line
    digit_colours: bool  # each digit in its own colour on a neutral panel framed in the panel's colour
    pad: int  # space between the text and the panel's edge (inside the frame, if any)
    frame_width: int  # the coloured frame around a neutral panel
    # Knobs below keep the drawing of the presets that leave them at their defaults (and their rng draws).
    # digit: on a neutral panel, each digit in DIGIT_COLOURS | per_text: one INKS colour per text, drawn
    # from the rng, so that the ink says nothing about the glyph
    ink: str = "digit"
    fonts: tuple[str, ...] = (FONT_PATH,)  # several: each text in one of them, drawn from the rng
    offset: int = 0  # each text's draw origin moved by up to this many pixels each way, from the rng

    def __post_init__(self) -> None:
        if self.ink not in ("digit", "per_text"):
            raise ValueError(f"Style.ink: {self.ink!r} is not digit or per_text")
        if not self.fonts:
            raise ValueError("Style.fonts: at least one font")


STYLES: dict[str, Style] = {
    "legacy": Style(ALPHABET, (3, 5), True, (10, 100), CODE_FONT_SIZES, None, True, False, 6, 0),
    # one glyph is ~24-28 px wide: about one merged token in a crop, a few pixels at 84x56
    # the 10 px frame keeps a panel's named colour visible in the 84x56 view (about 2 px there), which
    # a small model needs to tell the named panel from the others before it zooms
    "readable": Style(DIGITS, (3, 4), False, (100, 1000), (38, 40, 42), 64, False, True, 5, 10),
    # a candidate world whose codes hide in the 84x56 view (benchmarks/world_design.py): a digit is
    # ~8 px tall, under 2 px in the view, in one ink per text that does not name the digit; crops at
    # vision.box_step 0.02, crop_margin 0.04, crop_min_pixels 25088: glyphs ~29 px.  One font: the six
    # of BOLD_FONTS hide no better and READ learnt far slower (benchmarks/task_learnability.py)
    "hidden": Style(
        alphabet=DIGITS,
        code_lengths=(3, 4),
        letter_required=False,
        number_range=(100, 1000),
        code_font_sizes=(10, 11, 12),
        caption_font_size=None,  # captions as small: clip to find the frame they flash in, then crop
        titles=False,
        digit_colours=True,  # the neutral panel in a frame of its named colour, as readable
        pad=5,
        # the named colour ~3.5 px wide in the 84x56 view: at 10 px (~2 px) LOCATE boxed another panel
        # on half the held-out renders (benchmarks/locate_errors.py); the frame says nothing of the text
        frame_width=16,
        ink="per_text",
        # offset: moving the text in its panel changed nothing measured (world_design)
    ),
}
# Saturated, mutually distinct ink per digit (readable preset); none is the neutral panel colour.
DIGIT_COLOURS: dict[str, tuple[int, int, int]] = {
    "0": (220, 20, 20),
    "1": (20, 90, 230),
    "2": (0, 160, 40),
    "3": (240, 140, 0),
    "4": (150, 30, 200),
    "5": (0, 180, 190),
    "6": (230, 0, 160),
    "7": (120, 80, 20),
    "8": (20, 20, 20),
    "9": (150, 190, 0),
}
NEUTRAL_PANEL = (236, 236, 230)
# Inks of `Style.ink == "per_text"`: DIGIT_COLOURS' colours, each as likely for any digit.
INKS: tuple[tuple[int, int, int], ...] = tuple(DIGIT_COLOURS.values())


@dataclass
class SyntheticConfig:
    """`synthetic:` in params.yaml; the defaults are params.yaml's (a test checks they agree)."""

    n_videos: int = 160
    width: int = 448
    height: int = 252
    num_frames: int = 32  # source frames per video
    fps: float = 8.0
    num_shown_frames: int = 8  # frames the model is shown: uniform_indices(num_frames, num_shown_frames)
    questions_per_video: int = 3
    test_fraction: float = 0.35  # videos whose samples go to split "test" (by video, deterministic)
    val_fraction: float = 0.15  # share of all videos whose samples go to split "val" (never test ones)
    mc_fraction: float = 0.25  # fraction of questions turned into 4-option multiple choice
    seed: int = 0
    workers: int = 0  # processes drawing videos; 0 = one per core.  The bytes do not depend on it
    preset: str = "readable"  # readable | hidden | legacy: how text and panels are drawn (STYLES)

    def __post_init__(self) -> None:
        if self.preset not in STYLES:
            raise ValueError(f"synthetic.preset: {self.preset!r} is not one of {', '.join(STYLES)}")
        if self.val_fraction < 0:
            raise ValueError(f"synthetic.val_fraction: {self.val_fraction} is negative")
        if self.test_fraction + self.val_fraction >= 1:
            # train needs videos: its samples are all that the trajectories and RL sets come from
            raise ValueError(
                f"synthetic.test_fraction + synthetic.val_fraction: {self.test_fraction} + "
                f"{self.val_fraction} leaves no training videos (must be < 1)"
            )

    @property
    def style(self) -> Style:
        return STYLES[self.preset]


# ---------------------------------------------------------------- fonts
@lru_cache(maxsize=None)
def _font(size: int, path: str = FONT_PATH) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if os.path.exists(path):
        return ImageFont.truetype(path, size)
    if path != FONT_PATH:
        raise FileNotFoundError(f"font {path} is not installed (Style.fonts)")
    return ImageFont.load_default(size=size)


def _ink_box(text: str, size: int, font: str = FONT_PATH) -> tuple[int, int, int, int]:
    """The rendered ink box of `text` (in font file `font`) relative to its draw origin."""
    x1, y1, x2, y2 = _font(size, font).getbbox(text)
    return int(x1), int(y1), int(x2), int(y2)


def glyph_boxes(
    text: str, size: int, font_path: str = FONT_PATH
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Each character's ink box relative to the draw origin, drawn one character at a time."""
    font = _font(size, font_path)
    out = []
    for i, ch in enumerate(text):
        x = font.getlength(text[:i])
        x1, y1, x2, y2 = font.getbbox(ch)
        out.append((ch, (x + x1, float(y1), x + x2, float(y2))))
    return out


# ---------------------------------------------------------------- content model
@dataclass
class _Text:
    """One string drawn inside a panel at a fixed offset from the panel's corner."""

    text: str
    size: int
    dx: int  # draw origin relative to the panel's top-left corner
    dy: int
    role: str  # title / target / distractor / caption
    frames: range | None = None  # source frames where shown (None: whenever the panel is)
    font: str = FONT_PATH  # the font file
    ink: tuple[int, int, int] | None = None  # every glyph's ink (Style.ink per_text); None: the style's


@dataclass
class _Panel:
    kind: str
    colour: str
    w: int = 0
    h: int = 0
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    frames: range = range(0)  # source frames where the panel is visible
    texts: list[_Text] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.colour} {KIND_NAMES[self.kind]}"

    def main_texts(self) -> list[_Text]:
        return [t for t in self.texts if t.role != "title"]

    def corner(self, frame: int, num_frames: int) -> tuple[int, int]:
        """Top-left corner at a frame: linear drift, rounded so text stays crisp."""
        a = frame / max(num_frames - 1, 1)
        x = self.start[0] + a * (self.end[0] - self.start[0])
        y = self.start[1] + a * (self.end[1] - self.start[1])
        return int(round(x)), int(round(y))


@dataclass
class _Question:
    kind: str  # read / transient / compare / count
    text: str
    answer: str
    sources: list[tuple[_Panel, list[_Text]]]  # the strings the answer is read from
    alphabet: str  # for near-miss multiple-choice options
    pool: list[str] | None = None  # preferred wrong options; None: other strings of the video


def _code(rng: np.random.Generator, used: set[str], style: Style = STYLES["legacy"]) -> str:
    alphabet = style.alphabet
    while True:
        n = int(rng.integers(*style.code_lengths))
        code = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))
        # Legacy codes of digits only would read as numbers; keep at least one letter.
        if code not in used and not (style.letter_required and code.isdigit()):
            used.add(code)
            return code


def _number(rng: np.random.Generator, used: set[str], style: Style = STYLES["legacy"]) -> str:
    while True:
        num = str(int(rng.integers(*style.number_range)))
        if num not in used:
            used.add(num)
            return num


def _text_looks(style: Style, rng: np.random.Generator, n: int) -> list[tuple[str, Any, int, int]]:
    """(font, ink, dx, dy) of each of `n` texts: drawn from the rng only for the knobs a style sets."""
    fonts = (
        [style.fonts[int(i)] for i in rng.integers(0, len(style.fonts), n)] if len(style.fonts) > 1 else []
    )
    inks = [INKS[int(i)] for i in rng.integers(0, len(INKS), n)] if style.ink == "per_text" else []
    moves = rng.integers(-style.offset, style.offset + 1, (n, 2)) if style.offset else np.zeros((n, 2))
    return [
        (fonts[i] if fonts else style.fonts[0], inks[i] if inks else None, int(moves[i][0]), int(moves[i][1]))
        for i in range(n)
    ]


def _layout_panel(
    panel: _Panel, rng: np.random.Generator, main: list[str], style: Style = STYLES["legacy"]
) -> None:
    """Fill in the panel's texts and size from its kind and main strings."""
    size = int(rng.choice(style.code_font_sizes))
    if panel.kind == "caption" and style.caption_font_size:
        size = style.caption_font_size
    looks = _text_looks(style, rng, len(main))
    pad = style.pad + style.frame_width
    main_w = max(_ink_box(t, size, look[0])[2] for t, look in zip(main, looks))
    main_h = max(_ink_box("0", size, look[0])[3] for look in looks)
    title = None
    if panel.kind in TITLES and style.titles:
        title = str(rng.choice(TITLES[panel.kind]))
    if panel.kind == "caption":
        pad += 1
    if title is None:
        # One line: sign, plate, caption bar.
        panel.w = main_w + 2 * pad + (8 if panel.kind == "plate" else 0)
        panel.h = main_h + 2 * pad
        if panel.kind == "caption":
            panel.w = max(panel.w, int(rng.integers(110, 200)))
        x0 = (panel.w - main_w) // 2 if panel.kind == "plate" else pad
        panel.texts = [
            _Text(
                t, size, x0 + dx, pad - _ink_box("0", size, font)[1] + 1 + dy, "distractor", None, font, ink
            )
            for t, (font, ink, dx, dy) in zip(main, looks)
        ]
        return
    # Two lines: a title above the main string; slides get extra room for decorative bars.
    title_w, title_h = _ink_box(title, TITLE_FONT_SIZE)[2], _ink_box(title, TITLE_FONT_SIZE)[3]
    header = title_h + pad
    body_extra = 14 if panel.kind == "slide" else 0
    panel.w = max(title_w, main_w) + 2 * pad + (10 if panel.kind in ("slide", "app") else 0)
    panel.h = header + pad + main_h + pad + body_extra
    panel.texts = [_Text(title, TITLE_FONT_SIZE, pad, pad - _ink_box(title, TITLE_FONT_SIZE)[1], "title")]
    panel.texts += [
        _Text(
            t,
            size,
            pad + dx,
            header + pad - _ink_box("0", size, font)[1] + 1 + dy,
            "distractor",
            None,
            font,
            ink,
        )
        for t, (font, ink, dx, dy) in zip(main, looks)
    ]


def _text_box(t: _Text, x: int, y: int, W: int, H: int) -> list[float]:
    """The normalized ink box of text `t` of a panel whose corner is at (x, y)."""
    x1, y1, x2, y2 = _ink_box(t.text, t.size, t.font)
    return [
        round(min(max((x + t.dx + x1) / W, 0.0), 1.0), 5),
        round(min(max((y + t.dy + y1) / H, 0.0), 1.0), 5),
        round(min(max((x + t.dx + x2) / W, 0.0), 1.0), 5),
        round(min(max((y + t.dy + y2) / H, 0.0), 1.0), 5),
    ]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    return not (
        a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]
    )


def _place(
    panel: _Panel,
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    taken: list[tuple[int, int, int, int]],
    drift: bool,
) -> bool:
    """Pick start/end corners so the panel's whole sweep stays in frame and clear of others."""
    W, H, m = cfg.width, cfg.height, 4
    if panel.w > W - 2 * m or panel.h > H - 2 * m:
        return False
    for _ in range(300):
        if panel.kind == "caption":
            # Caption bars sit still near the top or bottom edge.
            x = float(rng.integers(m, W - panel.w - m + 1))
            if rng.random() < 0.3:
                y = float(m + int(rng.integers(0, 6)))
            else:
                y = float(H - panel.h - m - int(rng.integers(0, 6)))
            start = end = (x, y)
        else:
            start = (float(rng.integers(m, W - panel.w - m + 1)), float(rng.integers(m, H - panel.h - m + 1)))
            end = start
            if drift:
                dx, dy = rng.uniform(-60, 60), rng.uniform(-25, 25)
                end = (
                    float(np.clip(start[0] + dx, m, W - panel.w - m)),
                    float(np.clip(start[1] + dy, m, H - panel.h - m)),
                )
        sweep = (
            int(math.floor(min(start[0], end[0]))),
            int(math.floor(min(start[1], end[1]))),
            int(math.ceil(max(start[0], end[0]))) + panel.w,
            int(math.ceil(max(start[1], end[1]))) + panel.h,
        )
        if not any(_overlaps(sweep, t, 6) for t in taken):
            panel.start, panel.end = start, end
            taken.append(sweep)
            return True
    return False


def _transient_window(shown: list[int], pos: int, num_frames: int) -> range:
    """Source frames within ±1 of shown[pos], minus any that are other shown frames."""
    p = shown[pos]
    others = set(shown) - {p}
    lo = p - 1 if p - 1 >= 0 and p - 1 not in others else p
    hi = p + 1 if p + 1 < num_frames and p + 1 not in others else p
    return range(lo, hi + 1)


def _segments(shown: list[int], k: int, num_frames: int, rng: np.random.Generator) -> list[range]:
    """Split the video into k spans, each holding a contiguous, non-empty group of shown frames."""
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, len(shown)), size=k - 1, replace=False))
    bounds = [0]
    for c in cuts:
        # Switch codes halfway between the last shown frame of one group and the first of the next.
        bounds.append((shown[c - 1] + shown[c]) // 2 + 1)
    bounds.append(num_frames)
    return [range(bounds[i], bounds[i + 1]) for i in range(k)]


# ---------------------------------------------------------------- questions
def _mutate(text: str, rng: np.random.Generator, alphabet: str) -> str:
    """A near miss: one or two characters replaced from the same alphabet."""
    chars = list(text)
    for i in rng.choice(len(chars), size=int(rng.integers(1, min(2, len(chars)) + 1)), replace=False):
        chars[int(i)] = alphabet[int(rng.integers(0, len(alphabet)))]
    if alphabet == DIGITS and chars[0] == "0":
        chars[0] = text[0]  # numbers keep their non-zero leading digit
    return "".join(chars)


def choice_options(answer: str, pool: list[str], rng: np.random.Generator, alphabet: str) -> list[str]:
    """The answer plus 3 distinct plausible wrong options: other strings from the video first, then near
    misses."""
    wrong: list[str] = []
    for cand in [pool[int(i)] for i in rng.permutation(len(pool))] if pool else []:
        if cand != answer and cand not in wrong and len(wrong) < 2:
            wrong.append(cand)
    while len(wrong) < 3:
        cand = _mutate(answer, rng, alphabet)
        if cand != answer and cand not in wrong and cand:
            wrong.append(cand)
    opts = [answer] + wrong
    return [opts[int(i)] for i in rng.permutation(4)]


def _evidence(
    texts: list[_Text], shown: list[int], boxes: dict[tuple[int, int], list[float]], label: str | None = None
) -> list[Evidence]:
    """Every (shown frame, box) where one of `texts` is visible; `boxes` is keyed by (frame, id(text))."""
    out = []
    for f in shown:
        for t in texts:
            key = (f, id(t))
            if key in boxes:
                out.append(
                    Evidence(frame=f, bbox=list(boxes[key]), text=t.text, origin="ground_truth", label=label)
                )
    return out


# ---------------------------------------------------------------- rendering
def _background(cfg: SyntheticConfig, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """A muted two-colour gradient plus a low-frequency texture that pans over time."""
    W, H = cfg.width, cfg.height
    c1 = rng.uniform(45, 135, 3)
    c2 = rng.uniform(45, 135, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    a = np.cos(angle) * xx / W + np.sin(angle) * yy / H
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
    grad = (1 - a)[..., None] * c1 + a[..., None] * c2
    pad = 64
    coarse = rng.uniform(-18, 18, (6, 10, 3)).astype(np.float32)
    size = (W + 2 * pad, H + 2 * pad)
    channels = [
        Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize(size, Image.BICUBIC) for c in range(3)
    ]
    tex = np.stack([np.asarray(ch) for ch in channels], axis=-1)
    # Pan at 0.8-1.5 px/frame in a random direction so that frames always differ.
    speed, heading = rng.uniform(0.8, 1.5), rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)

    def frame(i: int) -> np.ndarray:
        ox = int(round(pad + np.clip(vx * i, -pad, pad)))
        oy = int(round(pad + np.clip(vy * i, -pad, pad)))
        return np.clip(grad + tex[oy : oy + H, ox : ox + W], 0, 255).astype(np.uint8)

    return frame


def _text_colour(colour: str) -> tuple[int, int, int]:
    r, g, b = PALETTE[colour]
    return DARK_TEXT if 0.299 * r + 0.587 * g + 0.114 * b > 140 else LIGHT_TEXT


def _draw_panel(
    draw: ImageDraw.ImageDraw, panel: _Panel, x: int, y: int, frame: int, style: Style = STYLES["legacy"]
) -> None:
    if style.digit_colours:
        # the named colour frames a neutral panel; each glyph is inked by its digit
        draw.rectangle([x, y, x + panel.w - 1, y + panel.h - 1], fill=PALETTE[panel.colour])
        fw = style.frame_width
        draw.rectangle([x + fw, y + fw, x + panel.w - 1 - fw, y + panel.h - 1 - fw], fill=NEUTRAL_PANEL)
        for t in panel.texts:
            if t.frames is None or frame in t.frames:
                font = _font(t.size, t.font)
                for i, ch in enumerate(t.text):
                    ink = t.ink or DIGIT_COLOURS.get(ch, DARK_TEXT)
                    draw.text((x + t.dx + font.getlength(t.text[:i]), y + t.dy), ch, font=font, fill=ink)
        return
    fill = PALETTE[panel.colour]
    ink = _text_colour(panel.colour)
    draw.rectangle([x, y, x + panel.w - 1, y + panel.h - 1], fill=fill)
    if panel.kind == "plate":
        draw.rectangle([x + 1, y + 1, x + panel.w - 2, y + panel.h - 2], outline=ink, width=2)
    elif panel.kind == "app":
        title = panel.texts[0]
        bottom = y + title.dy + _ink_box(title.text, title.size)[3] + 3
        draw.line([x, bottom, x + panel.w - 1, bottom], fill=ink, width=1)
    elif panel.kind == "slide":
        # Decorative "bullet" bars: slide-like texture without more text to read.
        y0 = y + panel.h - 12
        draw.rectangle([x + 6, y0, x + panel.w // 2, y0 + 2], fill=ink)
        draw.rectangle([x + 6, y0 + 5, x + panel.w * 2 // 3, y0 + 7], fill=ink)
    elif panel.kind == "price":
        draw.ellipse([x + panel.w - 9, y + 3, x + panel.w - 4, y + 8], fill=ink)
    for t in panel.texts:
        if t.frames is None or frame in t.frames:
            draw.text((x + t.dx, y + t.dy), t.text, font=_font(t.size, t.font), fill=t.ink or ink)


def _rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 as one (H*3/2, W) plane stack, PyAV's yuv420p ndarray layout.

    Converting here rather than through swscale (whose SIMD paths and chroma filters
    vary by CPU and version) keeps the bytes of a video independent of the machine.
    """
    f = rgb.astype(np.float32) * (1.0 / 255.0)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    # Chroma is linear in RGB, so average each 2x2 block first and convert a quarter of the pixels.
    q = 0.25 * (f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2])
    r, g, b = q[..., 0], q[..., 1], q[..., 2]
    cb = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    h, w = y.shape
    y8, u8, v8 = (np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, cb, cr))
    # PyAV reads the array flat (Y, then U, then V), so only the total size matters.
    return np.concatenate([y8.ravel(), u8.ravel(), v8.ravel()]).reshape(h * 3 // 2, w)


def decoded_like(rgb: np.ndarray) -> np.ndarray:
    """`rgb` as a decoder gives it back from our yuv420p videos: colour at half resolution.

    Perception pretraining draws still frames; reading them as the video's decoder would keeps
    what the model learns on renders valid on video frames (thin coloured strokes lose chroma).
    """
    h, w = rgb.shape[:2]
    planes = _rgb_to_yuv420p(rgb).astype(np.float32)
    y = planes[:h] - 16.0
    chroma = planes[h:].reshape(-1)
    cb = chroma[: (h // 2) * (w // 2)].reshape(h // 2, w // 2) - 128.0
    cr = chroma[(h // 2) * (w // 2) :].reshape(h // 2, w // 2) - 128.0
    cb, cr = (np.repeat(np.repeat(c, 2, axis=0), 2, axis=1) for c in (cb, cr))
    r = 1.164383 * y + 1.596027 * cr
    g = 1.164383 * y - 0.391762 * cb - 0.812968 * cr
    b = 1.164383 * y + 2.017232 * cb
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def _write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import av  # lazy: only generation needs the encoder

    h, w = frames[0].shape[:2]
    with atomic_open(path, "wb") as fh:
        with av.open(fh, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            # Low crf keeps 1-px strokes.  Byte-identical output needs one thread (x264's output
            # depends on the thread count) and no macroblock-tree rate control (with it, this
            # x264 build gave different bytes for identical input from run to run).
            stream.options = {"crf": "18", "preset": "fast", "threads": "1", "x264-params": "no-mbtree=1"}
            for arr in frames:
                frame = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(arr), format="yuv420p")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# ---------------------------------------------------------------- one video
def generate_video(
    video_id: str, path: Path, cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[VideoRecord, list[Sample]]:
    """Draw one video, write it to `path` (atomically), and return its record and questions.

    `VideoRecord.path` and `Sample.video` are `path` as given; `generate_dataset`
    rewrites them relative to the dataset root.  Splits default to "train".
    """
    if cfg.width % 2 or cfg.height % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {cfg.width}x{cfg.height}")
    N = cfg.num_frames
    style = cfg.style
    shown = uniform_indices(N, cfg.num_shown_frames)
    # Every draw below comes from `rng` in this order: features, panels, placement, questions,
    # background, multiple choice.  Reordering any step changes the video's bytes.
    panels = _make_panels(_panel_features(rng, shown), shown, N, style, rng)
    placed, compare_panels = _place_panels(panels, cfg, rng)

    # Questions first, so text roles can say which strings are asked about.
    special = _special_questions(placed, compare_panels, style, rng)
    reads = _read_questions(placed, style, rng)
    chosen = _choose_questions(special, reads, cfg.questions_per_video)

    frames, text_boxes, boxes = _render_frames(placed, cfg, rng)
    _write_mp4(Path(path), frames, cfg.fps)
    samples = _video_samples(video_id, path, chosen, placed, shown, boxes, cfg, rng)

    record = VideoRecord(
        video_id=video_id,
        path=Path(path).as_posix(),
        width=cfg.width,
        height=cfg.height,
        num_frames=N,
        fps=float(cfg.fps),
        text_boxes=text_boxes,
    )
    return record, samples


def _panel_features(rng: np.random.Generator, shown: list[int]) -> list[tuple[str, str]]:
    """(kind, feature) of each panel of a video: the question-bearing features it has, then fillers."""
    want_transient = len(shown) >= 3 and rng.random() < 0.45
    want_count = len(shown) >= 2 and rng.random() < 0.4
    want_compare = rng.random() < 0.45
    kinds: list[tuple[str, str]] = []  # (kind, feature)
    if want_transient:
        kinds.append(("caption", "transient"))
    elif rng.random() < 0.35:
        kinds.append(("caption", ""))
    if want_count:
        kinds.append(("plate", "count"))
    if want_compare:
        a, b = (str(k) for k in rng.choice(NUMBER_KINDS, size=2, replace=True))
        kinds += [(a, "compare"), (b, "compare")]
    n_panels = max(int(rng.integers(3, 6)), len(kinds))
    while len(kinds) < n_panels:
        kinds.append((str(rng.choice(FILLER_KINDS)), ""))
    return kinds


def _make_panels(
    kinds: list[tuple[str, str]], shown: list[int], N: int, style: Style, rng: np.random.Generator
) -> list[tuple[_Panel, str]]:
    """Each (kind, feature) as a laid-out panel in its own colour, with its strings and when they show."""
    everywhere = range(N)
    colours = [str(c) for c in rng.choice(list(PALETTE), size=len(kinds), replace=False)]
    used: set[str] = set()
    panels: list[tuple[_Panel, str]] = []
    for (kind, feature), colour in zip(kinds, colours):
        panel = _Panel(kind, colour, frames=everywhere)
        if kind in NUMBER_KINDS:
            main = [_number(rng, used, style)]
        elif feature == "count":
            k = int(rng.integers(2, min(4, len(shown)) + 1))
            main = [_code(rng, used, style) for _ in range(k)]
        else:
            main = [_code(rng, used, style)]
        _layout_panel(panel, rng, main, style)
        if feature == "count":
            for t, seg in zip(panel.main_texts(), _segments(shown, len(main), N, rng)):
                t.frames = seg
        if feature == "transient":
            pos = int(rng.integers(1, len(shown) - 1)) if len(shown) > 2 else 0
            panel.frames = _transient_window(shown, pos, N)
        if kind == "caption":
            for t in panel.main_texts():
                t.role = "caption"
        panels.append((panel, feature))
    return panels


def _place_panels(
    panels: list[tuple[_Panel, str]], cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[list[tuple[_Panel, str]], list[_Panel]]:
    """(the panels that fit, in their original order; the compare panels among them).

    Essential panels are placed first, bigger first, so fillers are what gets dropped if space runs out.
    """
    taken: list[tuple[int, int, int, int]] = []
    order = sorted(range(len(panels)), key=lambda i: (panels[i][1] == "", -panels[i][0].w * panels[i][0].h))
    ok = set()
    for i in order:
        panel = panels[i][0]
        drift = panel.kind != "caption" and rng.random() < 0.4
        if _place(panel, cfg, rng, taken, drift) or (drift and _place(panel, cfg, rng, taken, False)):
            ok.add(i)
    placed = [panels[i] for i in sorted(ok)]
    compare_panels = [p for p, f in placed if f == "compare"]
    if len(compare_panels) < 2:
        # A compare partner that did not fit: the other number is just an ordinary panel.
        placed = [(p, "" if f == "compare" else f) for p, f in placed]
    return placed, compare_panels


def _special_questions(
    placed: list[tuple[_Panel, str]], compare_panels: list[_Panel], style: Style, rng: np.random.Generator
) -> list[_Question]:
    """The transient, count and compare questions of the placed panels, shuffled."""
    features = {f for _, f in placed if f}
    special: list[_Question] = []
    for panel, feature in placed:
        main = panel.main_texts()
        if feature == "transient":
            special.append(
                _Question(
                    "transient",
                    f"What code flashes briefly in the {panel.colour} caption bar?",
                    main[0].text,
                    [(panel, main)],
                    style.alphabet,
                )
            )
        elif feature == "count":
            question = (
                f"How many different codes appear on the {panel.colour} license plate during the video?"
            )
            special.append(_Question("count", question, str(len(main)), [(panel, main)], "123456", pool=[]))
    if "compare" in features:
        p1, p2 = compare_panels[:2]
        n1, n2 = p1.main_texts()[0].text, p2.main_texts()[0].text
        question = f"Which is larger: the number on the {p1.name} or the number on the {p2.name}?"
        sources = [(p1, p1.main_texts()), (p2, p2.main_texts())]
        special.append(_Question("compare", question, max(n1, n2, key=int), sources, DIGITS, pool=[n1, n2]))
    return [special[int(i)] for i in rng.permutation(len(special))]


def _read_questions(
    placed: list[tuple[_Panel, str]], style: Style, rng: np.random.Generator
) -> list[_Question]:
    """A read question about each placed panel without a transient or count feature, shuffled."""
    reads: list[_Question] = []
    for panel, feature in placed:
        if feature in ("transient", "count"):
            continue
        t = panel.main_texts()[0]
        reads.append(
            _Question(
                "read",
                READ_TEMPLATES[panel.kind].format(c=panel.colour),
                t.text,
                [(panel, [t])],
                DIGITS if panel.kind in NUMBER_KINDS else style.alphabet,
            )
        )
    return [reads[int(i)] for i in rng.permutation(len(reads))]


def _choose_questions(special: list[_Question], reads: list[_Question], n: int) -> list[_Question]:
    """The first `n` questions, special ones first; the texts they ask about become targets."""
    # Ask first about panels no other question already covers (stable sort keeps the shuffle).
    covered = {id(panel) for q in special for panel, _ in q.sources}
    reads.sort(key=lambda q: id(q.sources[0][0]) in covered)
    chosen = (special + reads)[:n]
    for q in chosen:
        for _, texts in q.sources:
            for t in texts:
                t.role = "target"
    return chosen


def _render_frames(
    placed: list[tuple[_Panel, str]], cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[TextBox], dict[tuple[int, int], list[float]]]:
    """Every source frame, with its ground-truth text boxes (as records, and by (frame, id(text)))."""
    bg = _background(cfg, rng)
    W, H, N, style = cfg.width, cfg.height, cfg.num_frames, cfg.style
    frames: list[np.ndarray] = []
    text_boxes: list[TextBox] = []
    boxes: dict[tuple[int, int], list[float]] = {}
    for f in range(N):
        img = Image.fromarray(bg(f))
        draw = ImageDraw.Draw(img)
        for panel, _ in placed:
            if f not in panel.frames:
                continue
            x, y = panel.corner(f, N)
            _draw_panel(draw, panel, x, y, f, style)
            for t in panel.texts:
                if t.frames is not None and f not in t.frames:
                    continue
                bbox = _text_box(t, x, y, W, H)
                boxes[(f, id(t))] = bbox
                text_boxes.append(TextBox(frame=f, text=t.text, bbox=bbox, role=t.role))
        frames.append(np.asarray(img))
    return frames, text_boxes, boxes


def _video_samples(
    video_id: str,
    path: Path,
    chosen: list[_Question],
    placed: list[tuple[_Panel, str]],
    shown: list[int],
    boxes: dict[tuple[int, int], list[float]],
    cfg: SyntheticConfig,
    rng: np.random.Generator,
) -> list[Sample]:
    """The chosen questions as samples with their evidence; some become multiple choice."""
    all_codes = sorted({t.text for p, _ in placed for t in p.main_texts() if p.kind not in NUMBER_KINDS})
    all_numbers = sorted({t.text for p, _ in placed for t in p.main_texts() if p.kind in NUMBER_KINDS})
    samples: list[Sample] = []
    for qi, q in enumerate(chosen):
        evidence = [e for panel, texts in q.sources for e in _evidence(texts, shown, boxes, panel.name)]
        evidence.sort(key=lambda e: (e.frame, e.bbox[0], e.bbox[1]))
        sample = Sample(
            sample_id=f"{video_id}-q{qi}",
            video=Path(path).as_posix(),
            question=q.text,
            answers=[q.answer],
            question_kind=q.kind,
            source="synthetic",
            evidence=evidence,
        )
        if rng.random() < cfg.mc_fraction:
            # readable codes are digits too: the asked-about panel's kind says which pool fits
            if cfg.style.letter_required:
                numeric = q.alphabet == DIGITS
            else:
                numeric = q.sources[0][0].kind in NUMBER_KINDS
            pool = q.pool if q.pool is not None else (all_numbers if numeric else all_codes)
            options = choice_options(q.answer, pool, rng, q.alphabet)
            sample.problem_type = "multiple_choice"
            sample.options = options
            sample.answers = [OPTION_LETTERS[options.index(q.answer)]]
            sample.meta = {"answer_text": q.answer}
        samples.append(sample)
    return samples


# ---------------------------------------------------------------- still scenes (perception pretraining)
@dataclass
class SceneText:
    """One string of a still scene, with everything a perception example needs."""

    panel: str  # the panel's name, as questions say it ("red sign")
    kind: str  # the panel's kind (sign, caption, ...)
    question: str  # the read question about it, as a video question would ask it
    text: str
    box: list[float]  # normalized ink box in the frame
    glyphs: list[tuple[str, tuple[float, float, float, float]]]  # each character's ink box, frame pixels


@dataclass
class Scene:
    frame: np.ndarray  # H x W x 3 uint8, full resolution
    texts: list[SceneText]


def background_frame(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """One frame of a video background (gradient and texture), as videos draw them."""
    return _background(cfg, rng)(int(rng.integers(0, cfg.num_frames)))


def render_scene(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    caption_chance: float = 0.4,
    background: np.ndarray | None = None,
) -> Scene:
    """One still frame drawn like a video frame (same panels, fonts and background), and its strings.

    The caller owns the rng: perception pretraining seeds it from a stream of its own, so
    no scene is drawn from a video's seed.  `background` (from `background_frame`) saves
    drawing a new one, the costly part.
    """
    style = cfg.style
    n = int(rng.integers(3, 6))
    kinds = ["caption"] if rng.random() < caption_chance else []
    kinds += [str(k) for k in rng.choice(FILLER_KINDS, size=n - len(kinds))]
    colours = [str(c) for c in rng.choice(list(PALETTE), size=n, replace=False)]
    used: set[str] = set()
    taken: list[tuple[int, int, int, int]] = []
    placed: list[_Panel] = []
    for kind, colour in zip(kinds, colours):
        panel = _Panel(kind, colour, frames=range(1))
        main = [_number(rng, used, style) if kind in NUMBER_KINDS else _code(rng, used, style)]
        _layout_panel(panel, rng, main, style)
        if _place(panel, cfg, rng, taken, drift=False):
            placed.append(panel)
    img = Image.fromarray(background if background is not None else background_frame(cfg, rng))
    draw = ImageDraw.Draw(img)
    W, H = cfg.width, cfg.height
    texts = []
    for panel in placed:
        x, y = panel.corner(0, 1)
        _draw_panel(draw, panel, x, y, 0, style)
        for t in panel.main_texts():
            ox, oy = x + t.dx, y + t.dy
            box = _text_box(t, x, y, W, H)
            glyphs = [
                (ch, (ox + a, oy + b, ox + c, oy + d))
                for ch, (a, b, c, d) in glyph_boxes(t.text, t.size, t.font)
            ]
            question = READ_TEMPLATES[panel.kind].format(c=panel.colour)
            texts.append(SceneText(panel.name, panel.kind, question, t.text, box, glyphs))
    return Scene(decoded_like(np.asarray(img)), texts)


# ---------------------------------------------------------------- the dataset
def _share(fraction: float) -> Fraction:
    return Fraction(fraction).limit_denominator(10_000)


def _evenly_chosen(index: int, share: Fraction) -> bool:
    """Whether `index` is one of a `share` of indices spread evenly (0 first): exact in the long run."""
    return math.ceil((index + 1) * share) > math.ceil(index * share)


def _is_test(index: int, fraction: float) -> bool:
    """Spread test videos evenly by index (0 first): exact in the long run, independent of n_videos."""
    return _evenly_chosen(index, _share(fraction))


def _is_val(index: int, test_fraction: float, val_fraction: float) -> bool:
    """Spread val videos evenly over the videos that are not test ones, so that `val_fraction` of
    all videos are val in the long run; the test videos stay those of `_is_test` alone."""
    test = _share(test_fraction)
    if _evenly_chosen(index, test):
        return False
    rank = index - math.ceil(index * test)  # non-test videos before this one (ceil(i*f) are test)
    return _evenly_chosen(rank, _share(val_fraction) / (1 - test))


def video_split(index: int, cfg: SyntheticConfig) -> str:
    """The split of video `index`: test, val or train (by index alone, independent of n_videos)."""
    if _is_test(index, cfg.test_fraction):
        return "test"
    return "val" if _is_val(index, cfg.test_fraction, cfg.val_fraction) else "train"


def generate_dataset(
    out_dir: Path, cfg: SyntheticConfig, progress: Callable[[int], None] | None = None
) -> tuple[list[VideoRecord], list[Sample]]:
    """Write `out_dir/videos/syn-XXXXX.mp4` and return the records and samples (paths relative to out_dir).

    Manifests are the caller's job.
    """
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    workers = min(cfg.workers or os.cpu_count() or 1, cfg.n_videos) or 1
    jobs = [(index, out_dir, cfg) for index in range(cfg.n_videos)]
    if workers == 1:
        done = map(_generate_one, jobs)
    else:
        import multiprocessing

        # each video draws from its own rng seeded by (seed, index), so the processes can run in any order
        pool = multiprocessing.get_context("spawn").Pool(workers)
        done = pool.imap(_generate_one, jobs)
    records: list[VideoRecord] = []
    samples: list[Sample] = []
    try:
        for record, video_samples in done:  # imap keeps the index order
            records.append(record)
            samples.extend(video_samples)
            if progress is not None:
                progress(1)
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    return records, samples


def _generate_one(job: tuple[int, Path, SyntheticConfig]) -> tuple[VideoRecord, list[Sample]]:
    """Video `index` of the dataset, with its split and paths relative to the dataset root."""
    index, out_dir, cfg = job
    video_id = f"syn-{index:05d}"
    rel = f"videos/{video_id}.mp4"
    rng = np.random.default_rng([cfg.seed, index])
    record, video_samples = generate_video(video_id, out_dir / rel, cfg, rng)
    split = video_split(index, cfg)
    record.path, record.split = rel, split
    for s in video_samples:
        s.video, s.split = rel, split
    return record, video_samples


def synthetic_config(params: dict[str, Any]) -> SyntheticConfig:
    """`synthetic:`, with the top-level seed and the number of frames the model is shown."""
    cfg = fill(SyntheticConfig, section(params, "synthetic"), "synthetic")
    cfg.seed = int(params.get("seed", cfg.seed))
    # transient text is placed on exactly one of the frames the model will be shown
    cfg.num_shown_frames = vision_config(params).num_frames
    return cfg
