"""Render a trajectory to one PNG: the frames shown (with every crop region
outlined on the frame it came from), then each step's reasoning, tool call and
returned images, then the answer.  Synthesized and model trajectories alike: the
calls are re-executed for the regions and returned images, so a row needs no PNG files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from videor4.rumination.trajectory import Trajectory, reexecute

WIDTH = 1400
PAD = 12
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _thumb(img: Image.Image, height: int) -> Image.Image:
    w = max(1, round(img.width * height / img.height))
    return img.convert("RGB").resize((w, height), Image.BICUBIC)


def render_trajectory(traj: Trajectory, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    trajectory_image(traj).save(out_path)
    return out_path


def trajectory_image(traj: Trajectory) -> Image.Image:
    """The trajectory as one picture (see the module doc)."""
    # re-executing the calls gives each crop's region in its source frame and the returned images
    env, observations = reexecute(traj)
    font, bold = _font(14), _font(16)
    return _draw_rows(_layout(_blocks(traj, env.video.frames, observations)), font, bold)


def _blocks(traj: Trajectory, frames: list, observations: list) -> list[tuple[str, object]]:
    """What the picture shows, top to bottom: ("text", str), ("images", [(label, image)]) or
    ("step", (k, thought, call, observation text))."""
    blocks: list[tuple[str, object]] = [("text", f"{traj.traj_id} ({traj.kind})  Q: {traj.question}")]
    blocks.append(("images", [(f"{i + 1}", t) for i, t in enumerate(_outlined_thumbs(frames, observations))]))
    for k, (step, obs) in enumerate(zip(traj.steps, observations)):
        if step.tool_call is not None:
            call = json.dumps(step.tool_call.to_dict())
        else:
            call = f"invalid tool call: {step.text or ''}"
        blocks.append(("step", (k, step.thought, call, step.observation_text)))
        if obs.images:
            blocks.append(("images", [("", _thumb(im, 140)) for im in obs.images]))
    if traj.final_answer is not None:
        answer = f"\\boxed{{{traj.final_answer}}}"
    else:
        answer = f"no answer ({traj.finish_reason})"
    blocks.append(("text", f"{traj.final_thought}  ->  {answer}   (reference: {', '.join(traj.answers)})"))
    return blocks


def _outlined_thumbs(frames: list, observations: list) -> list[Image.Image]:
    """The shown frames with crop regions outlined, coloured by step."""
    thumbs = [_thumb(Image.fromarray(frame), 80) for frame in frames]
    for k, obs in enumerate(observations):
        for frame_pos, region in obs.regions:
            if region == (0.0, 0.0, 1.0, 1.0):
                continue
            im = thumbs[frame_pos]
            ImageDraw.Draw(im).rectangle(
                [region[0] * im.width, region[1] * im.height, region[2] * im.width, region[3] * im.height],
                outline=COLOURS[k % len(COLOURS)],
                width=2,
            )
    return thumbs


def _layout(blocks: list[tuple[str, object]]) -> list[tuple[str, object, int]]:
    """Each block as (kind, what to draw, height): text wrapped into lines, images as they are."""
    rows: list[tuple[str, object, int]] = []
    for kind, content in blocks:
        if kind == "text":
            lines = textwrap.wrap(str(content), 130)
            rows.append(("text", lines, 20 * len(lines) + PAD))
        elif kind == "step":
            k, thought, call, obs_text = content
            lines = (
                [f"step {k + 1}: " + line for line in textwrap.wrap(thought, 120)]
                + textwrap.wrap(call, 130)
                + [obs_text]
            )
            rows.append(("step", (k, lines), 20 * len(lines) + PAD))
        else:
            h = max(im.height for _, im in content) + 22
            rows.append(("images", content, h + PAD))
    return rows


def _draw_rows(
    rows: list[tuple[str, object, int]], font: ImageFont.ImageFont, bold: ImageFont.ImageFont
) -> Image.Image:
    """The laid-out rows drawn one under the other on a white canvas."""
    canvas = Image.new("RGB", (WIDTH, sum(h for *_, h in rows) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    y = PAD
    for kind, content, h in rows:
        if kind == "text":
            for i, line in enumerate(content):
                draw.text((PAD, y + 20 * i), line, fill="black", font=bold)
        elif kind == "step":
            k, lines = content
            for i, line in enumerate(lines):
                draw.text(
                    (PAD, y + 20 * i), line, fill=COLOURS[k % len(COLOURS)] if i == 0 else "black", font=font
                )
        else:
            x = PAD
            for label, im in content:
                if x + im.width > WIDTH - PAD:
                    break
                canvas.paste(im, (x, y))
                if label:
                    draw.text((x + 3, y + im.height + 2), label, fill="black", font=font)
                x += im.width + 8
        y += h
    return canvas
