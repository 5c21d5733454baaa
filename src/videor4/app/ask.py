"""Ask a trained policy about any video (or folder of page images): rumination on a
local file, streamed step by step, and a self-contained HTML report of what it looked at.

`video-r4 ask` is a thin wrapper over this module:

    sample = open_source("talk.mp4", "What is written on the slide?")
    env = open_env(sample, vision, max_images=16)
    policy = load_model("models/rl_c")
    r = ruminate(policy, sample, vision, settings, on_step=print_step, env=env)
    write_report(r.to_trajectory(), "reports/ask/talk.html")

Steps are read from the rollout's `Trajectory` (the format synthesis and eval write):
each assistant turn, and the tool call it made (if any) with its observation.  The
report re-executes the calls with the shared ops (`RuminationEnv`), so the frames and
regions it shows are exactly the pixels the model was given (their sha256s are in the
trajectory).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from videor4.rumination.tools import FULL_FRAME, Observation, RuminationEnv, VisionConfig
from videor4.rumination.trajectory import Step, Trajectory, reexecute
from videor4.rumination.video import VideoFrames

if TYPE_CHECKING:  # heavy (torch): only for annotations
    from videor4.policy.model import Policy
    from videor4.policy.rollout import Rollout, RolloutSettings

BOX_COLOUR = (255, 0, 255)  # crop boxes drawn on their source frames
BOX_WIDTH = 3
THUMB_SIDE = 480  # longest side of an embedded frame thumbnail
IMAGE_SIDE = 768  # longest side of an embedded returned image (what the model saw)


class AskError(Exception):
    """A problem with the user's input (question, video, model): one line, no traceback needed."""


# ---------------------------------------------------------------- inputs
def open_source(path: str | os.PathLike, question: str) -> dict[str, Any]:
    """The sample dict for a question about a local video file or a folder of page images."""
    from videor4.core.schema import Sample
    from videor4.data.sources.documents import load_page_folder

    question = (question or "").strip()
    if not question:
        raise AskError("question is empty")
    path = Path(path)
    if path.is_dir():
        try:
            return load_page_folder(path, question, sample_id=f"ask-{path.resolve().name}").to_dict()
        except ValueError as exc:
            raise AskError(str(exc)) from None
    if not path.exists():
        raise AskError(f"video not found: {path}")
    if not path.is_file():
        raise AskError(f"not a video file or page folder: {path}")
    return Sample.unanswered(str(path), question, f"ask-{path.stem}", "ask").to_dict()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence what FFmpeg/decord's C++ side writes straight to file descriptor 2 (e.g.
    "moov atom not found" for a corrupt mp4): the VideoError raised already says it on one line."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_env(sample: dict[str, Any], vision: VisionConfig, max_images: int | None = None) -> RuminationEnv:
    """The rumination environment over `vision.num_frames` uniformly sampled frames (or pages).
    Raises AskError for a missing, empty or undecodable source."""
    from videor4.rumination.trajectory import sample_env
    from videor4.rumination.video import VideoError

    try:
        with _native_stderr_silenced():
            return sample_env(sample, vision, max_images=max_images)
    except VideoError as exc:
        raise AskError(str(exc)) from None


def checkpoint_path(ref: str | os.PathLike, tracking_uri: str | None = None) -> Path:
    """The checkpoint directory `ref` names: a local path, or `runs:/<run id>/model` /
    `models:/<name>/<version>` fetched from the MLflow store (`tracking_uri`, else
    $MLFLOW_TRACKING_URI, else ./mlflow.db).  AskError when the store has no such model."""
    from videor4.pipeline.tracking import TrackingConfig, is_model_uri

    if not is_model_uri(ref):
        return Path(ref)
    from videor4.pipeline.registry import resolve_checkpoint

    try:
        return resolve_checkpoint(str(ref), tracking_uri or TrackingConfig().resolved_uri())
    except ValueError as exc:
        raise AskError(str(exc)) from None


def check_checkpoint(path: Path) -> Path:
    """`path` if it is a checkpoint (or reference) directory, else AskError saying what it is."""
    from videor4.policy.model import REFERENCE_FILE

    if not path.exists():
        raise AskError(
            f"model not found: {path} (a checkpoint directory, e.g. models/rl_c after `dvc repro`)"
        )
    if not path.is_dir():
        raise AskError(f"model path is not a directory: {path}")
    if not (path / "config.json").is_file() and not (path / REFERENCE_FILE).is_file():
        raise AskError(f"not a model checkpoint: {path} (no config.json or {REFERENCE_FILE})")
    return path


def load_model(path: str | os.PathLike, device: str | None = None, tracking_uri: str | None = None) -> Policy:
    """A policy from a local checkpoint (or reference) directory or an MLflow model URI (`checkpoint_path`);
    AskError if it is missing or not one."""
    from videor4.policy.model import ModelLoadError, load_policy

    path = check_checkpoint(checkpoint_path(path, tracking_uri))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return load_policy(path, device=device)
    except ModelLoadError as exc:
        raise AskError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001  (a broken checkpoint surfaces as anything from transformers)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AskError(f"cannot load a policy from {str(path)!r}: {first}") from None


# ---------------------------------------------------------------- running
def ruminate(
    policy: Policy,
    sample: dict[str, Any],
    vision: VisionConfig,
    settings: RolloutSettings,
    on_step: Callable[[Trajectory], None] | None = None,
    env: RuminationEnv | None = None,
) -> Rollout:
    """Run one rumination rollout to its end, calling `on_step` with its trajectory so far after
    every turn is acted on (the newest turn is `turn_texts()[-1]`)."""
    from videor4.policy.rollout import ruminate as run_rollout

    env = env or open_env(sample, vision, max_images=settings.max_images)
    return run_rollout(
        policy, sample, env, settings, on_turn=(lambda r: on_step(r.to_trajectory())) if on_step else None
    )


# ---------------------------------------------------------------- describing
def frame_label(traj: Trajectory, video: VideoFrames, pos: int) -> str:
    """`frame 3 (#12, 1.50 s)` for video frames, `page 3 (p3.png)` for pages; pos is 0-based."""
    if isinstance(traj.video, list):
        return f"page {pos + 1} ({Path(traj.video[video.indices[pos]]).name})"
    return f"frame {pos + 1} (#{video.indices[pos]}, {video.timestamps()[pos]:.2f} s)"


def _box(region: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in region) + ")"


def call_text(step: Step) -> str:
    """The call as the model wrote it (compact JSON), or a note that it did not parse."""
    if step.tool_call is None:
        return "invalid tool call"
    return f"{step.tool_call.name} {json.dumps(step.tool_call.arguments, separators=(', ', ': '))}"


def obs_text(traj: Trajectory, video: VideoFrames, step: Step, obs: Observation) -> str:
    """What a re-executed call did, in one line: which frames or which region it looked at, or its error."""
    if obs.error is not None:
        return f"execution error: {obs.error}"
    if step.tool_call.name == "cropping":
        parts = []
        for (pos, region), img in zip(obs.regions, obs.images):
            parts.append(
                f"region {_box(region)} of {frame_label(traj, video, pos)} -> {img.width}x{img.height} px"
            )
        return "; ".join(parts)
    return "looked at " + ", ".join(frame_label(traj, video, pos) for pos, _ in obs.regions)


# ---------------------------------------------------------------- the report
def _thumb(image: Any, side: int) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img = img.convert("RGB")
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return img


def draw_box(image: Image.Image, region: tuple[float, float, float, float]) -> Image.Image:
    """A copy of `image` with the normalized `region` outlined."""
    out = image.copy()
    w, h = out.size
    x1, y1, x2, y2 = region
    box = [x1 * w, y1 * h, max(x1 * w, x2 * w - 1), max(y1 * h, y2 * h - 1)]
    ImageDraw.Draw(out).rectangle(box, outline=BOX_COLOUR, width=BOX_WIDTH)
    return out


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(img: Image.Image, caption: str, cls: str = "", attrs: str = "") -> str:
    e = html.escape
    return (
        f'<figure class="{e(cls)}"><img src="{_data_uri(img)}" width="{img.width}" height="{img.height}"'
        f' alt="{e(caption)}"{attrs}><figcaption>{e(caption)}</figcaption></figure>'
    )


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta { color: #555; } .meta code { color: #222; }
.question, .answer { font-size: 1.15em; padding: .5em .8em; background: #f3f3f7;
                     border-left: 4px solid #4363d8; }
.answer { border-color: #3cb44b; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: .85em; color: #444; max-width: 480px; }
img { border: 1px solid #ccc; image-rendering: auto; }
pre { white-space: pre-wrap; background: #fafafa; border: 1px solid #eee; padding: .6em; }
.call code { background: #eef; padding: .1em .3em; }
.error { color: #b00020; font-weight: 600; }
.step { border-top: 1px solid #ddd; }
"""


def render_report(traj: Trajectory, model: str | None = None) -> str:
    """The report of a trajectory as one HTML string (images embedded as base64 PNG; all model
    text escaped).  The calls are re-executed for their pixels: the trajectory keeps sha256s."""
    env, observations = reexecute(traj)
    video = env.video
    out = _report_head(traj, env, model)
    turns = traj.turn_texts()
    for i, text in enumerate(turns):
        out.append(f'<div class="step"><h2>Step {i + 1}</h2>')
        out.append(f"<pre>{html.escape(text)}</pre>")
        if i < len(traj.steps):
            out += _step_html(traj, video, traj.steps[i], observations[i])
        out.append("</div>")
    out += _report_tail(traj, env, len(turns))
    return "\n".join(out) + "\n"


def _report_head(traj: Trajectory, env: RuminationEnv, model: str | None) -> list[str]:
    """The report's HTML up to the steps: the question, the source and the frames shown."""
    e = html.escape
    video = env.video
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Video-R4 ask: {e(traj.question)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Video-R4 ask</h1>",
        f'<p class="question">Q: {e(traj.question)}</p>',
        '<p class="meta">source: <code>'
        + e(str(video.path))
        + "</code>"
        + (f" &middot; model: <code>{e(str(model))}</code>" if model else "")
        + f" &middot; {len(video.frames)} of {video.num_source_frames} frames shown"
        + f" ({video.width}x{video.height})</p>",
        f"<h2>Frames shown ({len(video.frames)})</h2>",
        '<div class="row">',
    ]
    for pos, frame in enumerate(video.frames):
        seen = env.seen[pos].image
        caption = f"{frame_label(traj, video, pos)}; model saw {seen.width}x{seen.height}"
        out.append(_figure(_thumb(frame, THUMB_SIDE // 2), caption, "frame"))
    out.append("</div>")
    return out


def _step_html(traj: Trajectory, video: VideoFrames, step: Step, obs: Observation) -> list[str]:
    """A tool call's HTML: the call, then its error or its observation and the images it returned
    (a crop next to its region outlined on the source frame)."""
    e = html.escape
    out = [f'<p class="call">tool call: <code>{e(call_text(step))}</code></p>']
    if step.error is not None:
        out.append(f'<p class="error">Execution error: {e(step.error)}</p>')
        return out
    out.append(f'<p class="obs">{e(obs_text(traj, video, step, obs))}</p>')
    out.append('<div class="row">')
    for (pos, region), img in zip(obs.regions, obs.images):
        label = frame_label(traj, video, pos)
        if step.tool_call.name == "cropping" and tuple(region) != FULL_FRAME:
            source = draw_box(_thumb(video.frames[pos], THUMB_SIDE), region)
            attrs = f' data-region="{",".join(f"{v:.6f}" for v in region)}"'
            out.append(_figure(source, f"{label}, box {_box(region)}", "crop-source", attrs))
            cropped = f"cropped region ({img.width}x{img.height})"
            out.append(_figure(_thumb(img, IMAGE_SIDE), cropped, "returned"))
        else:
            out.append(_figure(_thumb(img, IMAGE_SIDE), f"{label} ({img.width}x{img.height})", "returned"))
    out.append("</div>")
    return out


def _report_tail(traj: Trajectory, env: RuminationEnv, n_turns: int) -> list[str]:
    """The report's HTML after the steps: the answer and a summary of the run."""
    e = html.escape
    answer = traj.final_answer if traj.final_answer is not None else "(no answer)"
    failed = sum(step.error is not None for step in traj.steps)
    return [
        "<h2>Answer</h2>",
        f'<p class="answer">{e(answer)}</p>',
        (
            f'<p class="meta">finish reason: <code>{e(str(traj.finish_reason))}</code> &middot; '
            f"{n_turns} turns, {len(traj.steps)} tool calls ({failed} failed), "
            f"{len(env.seen)} images seen</p>"
        ),
        "</body></html>",
    ]


def write_report(traj: Trajectory, path: str | os.PathLike, model: str | None = None) -> Path:
    """Write the HTML report atomically (a temp file in the same folder, then rename)."""
    from videor4.core.io import atomic_write_text

    atomic_write_text(path, render_report(traj, model))
    return Path(path)


def default_report_path(source: str | os.PathLike) -> Path:
    source = Path(source)
    name = source.resolve().name if source.is_dir() else source.stem
    return Path("reports/ask") / f"{name or 'video'}.html"
