"""Perception examples for pretraining a base that cannot read yet: what the paper's base model
already does, taught on still scenes from the synthetic generator.

- READ: a crop exactly as the crop tool returns it (the evidence box, jittered as a model's
  box would be, half the time rounded outward as the policy writes it, widened by the crop
  margin, re-encoded at the crop budget) → the final turn the policy writes once it can read
  the text (`read_answer_turn`: what it reads, then the answer, copied).
- READ_MC: READ asked as multiple choice (the answer and three near misses as options): the
  reading, then the option that holds it (`read_answer_turn` with its letter).
- READ_CLIP: a whole frame at the clip budget → a caption bar's text (captions are drawn
  large enough to be read once clipped; panel text is not, so it is never asked that way).
- LOCATE: the low-resolution frame the model is first shown → the turn the policy writes to
  zoom (`zoom_turn`: the name, then the box, then the crop call with the box copied).
- LOCATE_CLIP: the same on a frame at the clip budget, as a clip returns it: CRP trajectories
  clip first and then crop inside the clipped frame.
- READ_LOWRES (held-out metric only, never trained): READ's questions on the low-resolution
  view; it must stay near chance, which is why zooming matters.

Scenes are drawn as a video's frames are and then read back as the video decoder reads our
mp4s (`decoded_like`), so what is learned on renders holds on video frames.

Each image also carries dense labels per merged visual token (a 28x28 cell), mapped through
the crop and the resize, for auxiliary losses on the vision tower (`videor4.train.pretrain`):
- glyph: the character whose ink centre lies in the cell (else `NO_GLYPH`);
- slot: that character's place in the asked text, 0 for its first (else `NO_SLOT`), so a
  small language model finds the k-th character by content, wherever the text sits;
- colour and coordinates (LOCATE): for the cell holding a text's centre, its panel's colour
  (`COLOURS`, else `NO_COLOUR`) and the text's box, rounded outward to `vision.box_step` as the
  policy writes it, counted in steps (else `NO_COORD`);
- target cell (LOCATE): which cell holds the asked text's centre, where the language model's
  attention is taught to look while it writes the box.

Every example is drawn from an rng seeded by (seed, stream, index) with a stream of its own
(`TRAIN_STREAM`, `HELD_OUT_STREAM`); videos are seeded by (seed, index), so no example ever
reproduces a video of the dataset.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from videor4.core.schema import OPTION_LETTERS, question_with_options
from videor4.data.synthetic import (
    ALPHABET,
    DIGITS,
    PALETTE,
    Scene,
    SceneText,
    SyntheticConfig,
    background_frame,
    choice_options,
    render_scene,
)
from videor4.rumination.protocol import (
    LOCATE_QUESTION,
    ToolCall,
    box_text,
    format_assistant_turn,
    locate_phrase,
    outward_box,
    read_answer_turn,
    read_phrase,
    zoom_turn,
)
from videor4.rumination.tools import RuminationEnv, VisionConfig, region_pixels
from videor4.rumination.video import PATCH_FACTOR, VideoFrames, resize_to_budget

# read_lowres (the text asked of the frame as first shown) is trained only to measure what the view
# gives away: a reader with crop READ's recipe and budget (benchmarks/lowres_read.py)
TASKS = ("read", "read_mc", "read_clip", "read_lowres", "locate", "locate_clip")
HELD_OUT_TASKS = ("read", "read_lowres", "read_mc", "read_clip", "locate", "locate_clip")
READ_TASKS = (
    "read",
    "read_mc",
    "read_clip",
    "read_lowres",
)  # their answers read the asked text's characters off the image
LOCATE_TASKS = ("locate", "locate_clip")  # their answers give the asked text's box
TRAIN_STREAM = 7_000_001  # seed streams: (seed, stream, index); videos use (seed, index)
HELD_OUT_STREAM = 7_000_002
BACKGROUND_STREAM = 7_000_003
BACKGROUNDS = 256  # scenes share a pool of drawn backgrounds: drawing one costs more than the panels
MERGED_CELL = PATCH_FACTOR  # 28 px: one merged visual token (2x2 patches of 14 px)
GLYPH_CLASSES = ALPHABET  # every character either preset draws (digits first)
NO_GLYPH = len(GLYPH_CLASSES)  # the class of a token cell without a glyph centre
MAX_SLOTS = 8  # places in the asked text that carry a slot label (codes are 3-4 characters)
NO_SLOT = MAX_SLOTS  # a token cell that holds no character of the asked text
COLOURS = tuple(PALETTE)  # the panels' named colours, as questions say them
NO_COLOUR = len(COLOURS)
NO_COORD = -100  # cross-entropy's ignore index: a cell that holds no text's centre
BOX_JITTER = 0.03  # a model's box is not the ink box: READ crops are cut around a jittered one
OUTWARD_SHARE = 0.5  # of READ crops cut around the jittered box rounded outward to vision.box_step


def read_box_jitter(vision: VisionConfig) -> float:
    """How far a READ crop's box may stray from the ink box: BOX_JITTER, but at most half the crop
    margin, since a box off by more would cut the text out of a tight crop."""
    return min(BOX_JITTER, vision.crop_margin / 2)


@dataclass
class PerceptionExample:
    task: str
    messages: list[dict[str, Any]]  # user (image + question) → assistant (the answer)
    answer: str
    glyph_labels: list[np.ndarray] = field(
        default_factory=list
    )  # per image: (rows, cols) int64 of merged cells
    slot_labels: list[np.ndarray] = field(
        default_factory=list
    )  # per image: the asked text's character places, or NO_SLOT
    colour_labels: list[np.ndarray] = field(
        default_factory=list
    )  # per image (LOCATE): colour of the text centred in a cell
    coord_labels: list[np.ndarray] = field(
        default_factory=list
    )  # per image (LOCATE): (rows, cols, 4) box in box steps
    target_cell: int | None = (
        None  # LOCATE: the flat index of the cell holding the asked text's centre (first image)
    )
    evidence_box: list[float] | None = None  # normalized, for LOCATE's metric
    # how the answer begins: what is read off the image ('It reads "917".', 'The red sign is at [..].');
    # the rest of the turn (the copies into the call or the answer) is taught at a lower weight
    phrase: str = ""
    choice: str | None = None  # READ_MC: the letter of the option that holds the text


def example_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _still(scene: Scene) -> VideoFrames:
    h, w = scene.frame.shape[:2]
    return VideoFrames(
        path="<scene>", indices=[0], frames=[scene.frame], fps=1.0, num_source_frames=1, width=w, height=h
    )


def centre_cell(
    image: Image.Image, region_px: tuple[int, int, int, int], box: tuple[float, ...]
) -> tuple[int, int] | None:
    """The merged token (row, col) of `image` (frame pixels `region_px`, resized) holding the centre of
    `box` (frame pixels), or None when it falls outside."""
    left, top, right, bottom = region_px
    x1, y1, x2, y2 = box
    cx = ((x1 + x2) / 2 - left) * image.width / (right - left)
    cy = ((y1 + y2) / 2 - top) * image.height / (bottom - top)
    rows, cols = image.height // MERGED_CELL, image.width // MERGED_CELL
    if 0 <= cx < cols * MERGED_CELL and 0 <= cy < rows * MERGED_CELL:
        return int(cy // MERGED_CELL), int(cx // MERGED_CELL)
    return None


def _cell_grid(
    image: Image.Image,
    region_px: tuple[int, int, int, int],
    labelled: list[tuple[Any, tuple[float, ...]]],
    empty: Any,
    depth: int = 0,
) -> np.ndarray:
    """Each merged token of `image` labelled by the box whose centre lies in it (`depth` > 0: a vector
    label)."""
    shape = (image.height // MERGED_CELL, image.width // MERGED_CELL) + ((depth,) if depth else ())
    grid = np.full(shape, empty, dtype=np.int64)
    for label, box in labelled:
        cell = centre_cell(image, region_px, box)
        if cell is not None:
            grid[cell] = label
    return grid


def glyph_grid(
    image: Image.Image, region_px: tuple[int, int, int, int], glyphs: list[tuple[str, tuple[float, ...]]]
) -> np.ndarray:
    """The glyph class of each merged token of `image`, which shows frame pixels `region_px` resized."""
    return _cell_grid(
        image,
        region_px,
        [(GLYPH_CLASSES.index(ch), box) for ch, box in glyphs if ch in GLYPH_CLASSES],
        NO_GLYPH,
    )


def slot_grid(
    image: Image.Image, region_px: tuple[int, int, int, int], target: list[tuple[str, tuple[float, ...]]]
) -> np.ndarray:
    """Each merged token's place in the asked text (0 = its first character), else NO_SLOT."""
    return _cell_grid(image, region_px, [(k, box) for k, (_, box) in enumerate(target[:MAX_SLOTS])], NO_SLOT)


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
    return [
        round(x1, 2),
        round(y1, 2),
        round(min(max(x2, x1 + 0.02), 1.0), 2),
        round(min(max(y2, y1 + 0.02), 1.0), 2),
    ]


def crop_example(
    scene: Scene,
    target: SceneText,
    vision: VisionConfig,
    rng: np.random.Generator,
    multiple_choice: bool = False,
) -> PerceptionExample:
    env = RuminationEnv(_still(scene), vision)
    box = _jitter(target.box, rng, read_box_jitter(vision))
    if (
        rng.random() < OUTWARD_SHARE
    ):  # as the policy writes it: rounded outward, so a wider crop and smaller glyphs
        box = outward_box(box, vision.box_step)
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": box}))
    if not obs.ok:  # a jittered box that became too small: the exact box always fits
        obs = env.execute(
            ToolCall("cropping", {"target_image": 1, "bbox_2d": [round(v, 2) for v in target.box]})
        )
    if not obs.ok:  # a world whose texts are smaller than the tool's smallest crop cannot be taught
        raise ValueError(f"READ example: the crop tool refuses the text's own box: {obs.error}")
    image = obs.images[0]
    h, w = scene.frame.shape[:2]
    px = region_pixels(obs.regions[0][1], w, h)
    question, letter = target.question, None
    if (
        multiple_choice
    ):  # the options as a video question lists them: other texts of the scene, then near misses
        pool = [t.text for t in scene.texts if t.text != target.text]
        options = choice_options(target.text, pool, rng, DIGITS if target.text.isdigit() else ALPHABET)
        letter = OPTION_LETTERS[options.index(target.text)]
        question = question_with_options(question, options)
    return PerceptionExample(
        "read_mc" if multiple_choice else "read",
        _conversation(image, question, read_answer_turn(target.text, letter)),
        target.text,
        [glyph_grid(image, px, _all_glyphs(scene))],
        [slot_grid(image, px, target.glyphs)],
        phrase=read_phrase(target.text),
        choice=letter,
    )


def whole_frame_example(
    scene: Scene, target: SceneText, task: str, max_pixels: int, min_pixels: int, vision: VisionConfig
) -> PerceptionExample:
    """The whole frame at a budget: READ_CLIP and READ_LOWRES ask for the text, LOCATE for its box."""
    image = resize_to_budget(scene.frame, max_pixels, min_pixels, vision.factor)
    h, w = scene.frame.shape[:2]
    whole = (0, 0, w, h)
    example = PerceptionExample(
        task,
        [],
        target.text,
        [glyph_grid(image, whole, _all_glyphs(scene))],
        [slot_grid(image, whole, target.glyphs)],
        evidence_box=list(target.box),
    )
    if task not in LOCATE_TASKS:
        example.messages = _conversation(image, target.question, read_answer_turn(target.text))
        example.phrase = read_phrase(target.text)
        return example
    said = outward_box(target.box, vision.box_step)
    example.answer = box_text(said)
    thought, call = zoom_turn(target.panel, said)
    example.messages = _conversation(
        image, LOCATE_QUESTION.format(question=target.question), format_assistant_turn(thought, call)
    )
    example.phrase = locate_phrase(target.panel, said)
    centred = [(t, _pixel_box(t.box, w, h)) for t in scene.texts]
    colour = [(COLOURS.index(t.panel.split()[0]), box) for t, box in centred]
    coords = [(box_steps(t.box, vision.box_step), box) for t, box in centred]
    example.colour_labels = [_cell_grid(image, whole, colour, NO_COLOUR)]
    example.coord_labels = [_cell_grid(image, whole, coords, NO_COORD, depth=4)]
    cell = centre_cell(image, whole, _pixel_box(target.box, w, h))
    example.target_cell = None if cell is None else cell[0] * (image.width // MERGED_CELL) + cell[1]
    return example


def box_steps(box: list[float], step: float) -> list[int]:
    """A box as the policy writes it (`outward_box`), in whole steps: the coordinate heads' classes."""
    return [int(round(v / step)) for v in outward_box(box, step)]


def _pixel_box(box: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    return box[0] * width, box[1] * height, box[2] * width, box[3] * height


@lru_cache(maxsize=4)
def _backgrounds(world: tuple, seed: int) -> list[np.ndarray]:
    cfg = SyntheticConfig(*world)
    return [background_frame(cfg, example_rng(seed, BACKGROUND_STREAM, i)) for i in range(BACKGROUNDS)]


def example_scene(
    task: str, world: SyntheticConfig, seed: int, stream: int, index: int
) -> tuple[Scene, SceneText, np.random.Generator]:
    """The scene and asked text of example `index` of a stream, and the rng left to draw the rest."""
    rng = example_rng(seed, stream, index)
    while True:
        # READ_CLIP asks about captions, so its scenes always hold one
        background = _backgrounds(astuple(world), seed)[int(rng.integers(0, BACKGROUNDS))]
        scene = render_scene(
            world, rng, caption_chance=1.0 if task == "read_clip" else 0.4, background=background
        )
        pool = [t for t in scene.texts if t.kind == "caption"] if task == "read_clip" else scene.texts
        if pool:
            break
    return scene, pool[int(rng.integers(0, len(pool)))], rng


def make_example(
    task: str, world: SyntheticConfig, vision: VisionConfig, seed: int, stream: int, index: int
) -> PerceptionExample:
    """Example `index` of a stream for one task; the same arguments give the same example."""
    scene, target, rng = example_scene(task, world, seed, stream, index)
    if task in ("read", "read_mc"):
        return crop_example(scene, target, vision, rng, multiple_choice=task == "read_mc")
    if task in ("read_clip", "locate_clip"):
        return whole_frame_example(
            scene, target, task, vision.clip_max_pixels, vision.clip_min_pixels, vision
        )
    if task in ("locate", "read_lowres"):
        return whole_frame_example(
            scene, target, task, vision.frame_max_pixels, vision.frame_min_pixels, vision
        )
    raise ValueError(f"unknown perception task {task!r} (known: {', '.join(HELD_OUT_TASKS)})")


def task_of(index: int, mix: dict[str, float], seed: int) -> str:
    """The task of training example `index`, drawn by the mix's weights (seeded, so resumable)."""
    names = sorted(mix)
    weights = np.array([mix[n] for n in names], dtype=float)
    u = example_rng(seed, TRAIN_STREAM + 1, index).random()
    return names[int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))]
