"""The two visual operations — clipping and cropping — and the per-rollout state
they act on.  This is the only implementation of the tools: synthesis, QC,
rollouts, eval, replay and the CLI all execute calls through `RuminationEnv`.

Indices the model uses are 1-based: `clipping` indexes the frames it was shown,
`cropping` indexes every image seen so far (frames first, then each returned
image in order).  Crops are always cut from the full-resolution source frame,
composing the regions of crops-of-crops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image

from videor4.core.params import fill, section
from videor4.rumination.protocol import (
    MAX_FRAMES_PER_CLIP,
    ParsedTurn,
    ToolCall,
    check_arguments,
    clip_observation_text,
    crop_observation_text,
    error_observation_text,
)
from videor4.rumination.video import PATCH_FACTOR, VideoFrames, resize_to_budget

FULL_FRAME = (0.0, 0.0, 1.0, 1.0)
# A box whose coordinates are all <= 1 + this is normalized (and clamped): models often overshoot
# an edge a little (x2 = 1.02).  Only a coordinate clearly above it marks a box in pixels.
NORMALIZED_TOLERANCE = 0.05


@dataclass
class VisionConfig:
    """Pixel budgets (Qwen smart-resize) and tool limits; filled from params `vision:`."""

    num_frames: int = 8  # frames shown to the model, sampled uniformly
    factor: int = PATCH_FACTOR
    frame_min_pixels: int = 4 * 28 * 28
    frame_max_pixels: int = 512 * 28 * 28  # the low-resolution frames shown first
    clip_min_pixels: int = 4 * 28 * 28
    clip_max_pixels: int = 400 * 28 * 28  # frames returned by clipping
    crop_min_pixels: int = 4 * 28 * 28  # raise it to upscale small crops
    crop_max_pixels: int = 1000 * 28 * 28  # regions returned by cropping
    max_frames_per_clip: int = MAX_FRAMES_PER_CLIP  # the system prompt states it (protocol.system_prompt)
    crop_margin: float = 0.1  # widen each side of a box by this (normalized), as Pixel-Reasoner
    min_crop_side: int = 28  # source pixels; smaller crops are refused
    # boxes the policy is taught to write (trajectories, LOCATE) are rounded outward to this step;
    # the tools take any box
    box_step: float = 0.01

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "VisionConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown vision params: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SeenImage:
    """An image in the model's context and where its pixels came from."""

    image: Image.Image
    frame_pos: int  # 0-based position among the shown frames
    region: tuple[float, float, float, float]  # normalized box of the source frame
    kind: str  # frame | clip | crop


@dataclass
class Observation:
    text: str
    images: list[Image.Image] = field(default_factory=list)
    error: str | None = None
    regions: list[tuple[int, tuple[float, float, float, float]]] = field(
        default_factory=list
    )  # (frame_pos, region)

    @property
    def ok(self) -> bool:
        return self.error is None


class ToolError(ValueError):
    """A call that is well-typed but cannot be executed in this state."""


def _compose(outer: tuple[float, ...], inner: tuple[float, ...]) -> tuple[float, float, float, float]:
    ox1, oy1, ox2, oy2 = outer
    w, h = ox2 - ox1, oy2 - oy1
    x1, y1, x2, y2 = inner
    return (ox1 + x1 * w, oy1 + y1 * h, ox1 + x2 * w, oy1 + y2 * h)


def region_pixels(region: tuple[float, ...], width: int, height: int) -> tuple[int, int, int, int]:
    """The source pixels (left, top, right, bottom) a normalized region covers, outward-rounded."""
    return (
        int(math.floor(region[0] * width)),
        int(math.floor(region[1] * height)),
        int(math.ceil(region[2] * width)),
        int(math.ceil(region[3] * height)),
    )


class RuminationEnv:
    """The state of one rollout: the frames shown, every image seen, and the tools."""

    def __init__(self, video: VideoFrames, vision: VisionConfig | None = None, max_images: int | None = None):
        self.video = video
        self.vision = vision or VisionConfig()
        self.max_images = max_images
        v = self.vision
        self.seen: list[SeenImage] = [
            SeenImage(
                image=resize_to_budget(frame, v.frame_max_pixels, v.frame_min_pixels, v.factor),
                frame_pos=i,
                region=FULL_FRAME,
                kind="frame",
            )
            for i, frame in enumerate(video.frames)
        ]
        self.calls: list[tuple[ToolCall | None, Observation]] = []

    @property
    def num_frames(self) -> int:
        return len(self.video.frames)

    def initial_images(self) -> list[Image.Image]:
        return [s.image for s in self.seen[: self.num_frames]]

    # ------------------------------------------------------------ dispatch
    def step(self, turn: ParsedTurn) -> Observation:
        """Execute the tool call of a parsed turn (or report why it could not be parsed)."""
        if turn.call_error is not None:
            obs = Observation(text=error_observation_text(turn.call_error), error=turn.call_error)
            self.calls.append((None, obs))
            return obs
        if turn.tool_call is None:
            raise ValueError("turn has no tool call to execute")
        return self.execute(turn.tool_call)

    def execute(self, call: ToolCall) -> Observation:
        """Run one call; every failure becomes an `Execution error:` observation."""
        reason = check_arguments(call)
        try:
            if reason is not None:
                raise ToolError(reason)
            if call.name == "clipping":
                obs = self._clipping(call.arguments["target_frames"])
            else:
                obs = self._cropping(call.arguments["target_image"], call.arguments["bbox_2d"])
        except ToolError as exc:
            obs = Observation(text=error_observation_text(str(exc)), error=str(exc))
        self.calls.append((call, obs))
        return obs

    def _check_image_budget(self, n_new: int) -> None:
        if self.max_images is not None and len(self.seen) + n_new > self.max_images:
            raise ToolError(f"image budget exhausted ({len(self.seen)} of {self.max_images} images used)")

    # ------------------------------------------------------------ clipping
    def _clipping(self, target_frames: list[int]) -> Observation:
        v = self.vision
        n = self.num_frames
        bad = [f for f in target_frames if not 1 <= f <= n]
        if bad:
            raise ToolError(f"frame {bad[0]} out of range; frames are numbered 1 to {n}")
        frames = list(dict.fromkeys(target_frames))  # keep order, drop repeats
        if len(frames) > v.max_frames_per_clip:
            raise ToolError(f"too many frames ({len(frames)}); select at most {v.max_frames_per_clip}")
        self._check_image_budget(len(frames))
        first = len(self.seen) + 1
        images, regions = [], []
        for f in frames:
            img = resize_to_budget(self.video.frames[f - 1], v.clip_max_pixels, v.clip_min_pixels, v.factor)
            self.seen.append(SeenImage(img, f - 1, FULL_FRAME, "clip"))
            images.append(img)
            regions.append((f - 1, FULL_FRAME))
        return Observation(text=clip_observation_text(frames, first), images=images, regions=regions)

    # ------------------------------------------------------------ cropping
    def _cropping(self, target_image: int, bbox: list[float]) -> Observation:
        v = self.vision
        if not 1 <= target_image <= len(self.seen):
            raise ToolError(f"image {target_image} out of range; images are numbered 1 to {len(self.seen)}")
        target = self.seen[target_image - 1]
        x1, y1, x2, y2 = (float(b) for b in bbox)
        if max(x1, y1, x2, y2) > 1.0 + NORMALIZED_TOLERANCE:  # read as pixels of the image the model saw
            w, h = target.image.size
            x1, x2, y1, y2 = x1 / w, x2 / w, y1 / h, y2 / h
        if x2 <= x1 or y2 <= y1:
            raise ToolError(f"bbox_2d {list(bbox)} has zero or negative area (need x1 < x2 and y1 < y2)")
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)
        if x2 <= x1 or y2 <= y1:
            raise ToolError(f"bbox_2d {list(bbox)} lies outside the image")
        m = v.crop_margin
        box = (max(0.0, x1 - m), max(0.0, y1 - m), min(1.0, x2 + m), min(1.0, y2 + m))
        region = _compose(target.region, box)
        frame = self.video.frames[target.frame_pos]
        fh, fw = frame.shape[:2]
        left, top, right, bottom = region_pixels(region, fw, fh)
        if right - left <= v.min_crop_side or bottom - top <= v.min_crop_side:
            raise ToolError(
                f"crop region too small ({right - left}x{bottom - top} px); it must be larger than "
                f"{v.min_crop_side}x{v.min_crop_side} px"
            )
        self._check_image_budget(1)
        pixels = np.ascontiguousarray(frame[top:bottom, left:right])
        img = resize_to_budget(pixels, v.crop_max_pixels, v.crop_min_pixels, v.factor)
        self.seen.append(SeenImage(img, target.frame_pos, region, "crop"))
        return Observation(
            text=crop_observation_text(img.width, img.height, len(self.seen)),
            images=[img],
            regions=[(target.frame_pos, region)],
        )


def vision_config(params: dict[str, Any], overrides: dict[str, Any] | None = None) -> VisionConfig:
    """`vision:`, with `overrides` (e.g. `eval.vision`: the larger crop budget used at evaluation)."""
    return fill(VisionConfig, {**section(params, "vision"), **(overrides or {})}, "vision")
