"""`video-r4 ask`: rumination on a local video or page folder with a real tiny policy,
streamed steps, the HTML report (frames, crop boxes, errors), and one-line errors."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import SMALL_PARAMS
from videor4.app.ask import BOX_COLOUR, AskError, load_model, open_env, open_source, write_report
from videor4.policy.encoding import PolicyEncoder
from videor4.policy.rollout import RolloutEngine, RolloutSettings
from videor4.rumination.tools import VisionConfig
from videor4.rumination.trajectory import Trajectory, image_digest

BIN = Path(sys.executable).parent / "video-r4"
VISION = VisionConfig.from_dict(SMALL_PARAMS["vision"])  # 6 frames shown
CLIP = (
    "Look <script>alert(1)</script> closer.\n<tool_call>\n"
    '{"name": "clipping", "arguments": {"target_frames": [1, 3]}}\n</tool_call>'
)
CROP = (
    'Zoom in.\n<tool_call>\n{"name": "cropping", '
    '"arguments": {"target_image": 2, "bbox_2d": [0.1, 0.1, 0.6, 0.6]}}\n</tool_call>'
)
BAD = 'Again.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [99]}}\n</tool_call>'
GARBLED = "Once more.\n<tool_call>{oops</tool_call>"
IMG = re.compile(
    r'<figure class="([\w-]*)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"'
    r'[^>]*?(?: data-region="([\d.,]+)")?>'
)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "ask", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def figures(page: str) -> list[tuple[str, Image.Image, str | None]]:
    """(class, decoded image, data-region) of every embedded figure."""
    return [
        (c, Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"), r) for c, b, r in IMG.findall(page)
    ]


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ask") / "params.yaml"
    path.write_text(yaml.safe_dump({**SMALL_PARAMS, "rollout": {"max_tool_calls": 2, "max_images": 16}}))
    return path


# ---------------------------------------------------------------- the command
def test_ask_streams_steps_answers_and_writes_a_report(tiny_dir, sample_video, params_file, tmp_path):
    question = 'What is <b>shown</b> & "where"?'
    out = tmp_path / "out" / "r.html"
    result = cli(
        str(sample_video),
        question,
        "--model",
        str(tiny_dir),
        "--params",
        str(params_file),
        "--report",
        str(out),
        "--max-new-tokens",
        "16",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{sample_video}: 6 of 16 frames shown (320x192); tool budget 2")
    assert "[step 1]" in lines
    n_steps = sum(line.startswith("[step ") for line in lines)
    assert 1 <= n_steps <= 3  # at most 2 calls, then the answer is forced
    answer = [line for line in lines if line.startswith("answer: ")]
    finish = [line for line in lines if line.startswith("finish: ")]
    assert len(answer) == 1 and len(finish) == 1 and f"({n_steps} turns" in finish[0]
    assert lines[-1] == f"report: {out}"

    page = out.read_text()
    assert html.escape(question) in page and "<b>shown</b>" not in page
    found = figures(page)
    assert page.count("<img") == len(found) >= 6
    assert [c for c, _, _ in found[:6]] == ["frame"] * 6
    assert page.count('<div class="step">') == n_steps
    assert not list(out.parent.glob("*.tmp"))  # written atomically, no temp file left


def test_a_folder_of_page_images(tiny_dir, params_file, tmp_path):
    pages = tmp_path / "deck"
    pages.mkdir()
    for name, colour in [("p10.png", (200, 0, 0)), ("p2.png", (0, 200, 0)), ("p1.png", (0, 0, 200))]:
        Image.new("RGB", (200, 280), colour).save(pages / name)
    (pages / "notes.txt").write_text("not a page")
    out = tmp_path / "deck.html"
    result = cli(
        str(pages),
        "What is the total?",
        "--model",
        str(tiny_dir),
        "--params",
        str(params_file),
        "--report",
        str(out),
        "--max-new-tokens",
        "8",
        "--max-steps",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "3 of 3 frames shown (200x280); tool budget 0" in result.stdout
    assert "answer: " in result.stdout and "0 tool calls" in result.stdout
    page = out.read_text()
    # natural page order: p1, p2, p10, each shown with its own pixels
    assert page.index("page 1 (p1.png)") < page.index("page 2 (p2.png)") < page.index("page 3 (p10.png)")
    frames = [im for c, im, _ in figures(page) if c == "frame"]
    assert [im.getpixel((50, 50)) for im in frames] == [(0, 0, 200), (0, 200, 0), (200, 0, 0)]


CASES = [
    "missing video",
    "corrupt video",
    "empty folder",
    "empty question",
    "missing model",
    "not a checkpoint",
    "invalid model",
    "bad params",
]


@pytest.mark.parametrize("case", CASES)
def test_clear_one_line_errors(case, tiny_dir, sample_video, params_file, tmp_path):
    video, question, model = str(sample_video), "What is shown?", str(tiny_dir)
    needle = {
        "missing video": "video not found",
        "corrupt video": "cannot decode video",
        "empty folder": "no page images",
        "empty question": "question is empty",
        "missing model": "model not found",
        "not a checkpoint": "not a model checkpoint",
        "invalid model": "cannot load a policy",
        "bad params": "unknown params vision: bogus",
    }[case]
    if case == "missing video":
        video = str(tmp_path / "nope.mp4")
    elif case == "corrupt video":
        video = str(tmp_path / "bad.mp4")
        Path(video).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "empty folder":
        video = str(tmp_path)
    elif case == "empty question":
        question = "   "
    elif case == "missing model":
        model = str(tmp_path / "no-model")
    elif case == "not a checkpoint":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    elif case == "invalid model":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "config.json").write_text("{not json")
        model = str(tmp_path / "junk")
    else:
        params_file = tmp_path / "bad.yaml"
        params_file.write_text(yaml.safe_dump({"vision": {"bogus": 1}}))
    result = cli(
        video, question, "--model", model, "--params", str(params_file), "--report", str(tmp_path / "r.html")
    )
    assert_one_line_error(result, needle)
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- the library: scripted steps and the report
def test_report_shows_clipped_frames_crop_boxes_and_errors(tiny_dir, sample_video, tmp_path):
    policy = load_model(tiny_dir, device="cpu")
    settings = RolloutSettings(
        max_tool_calls=4, max_images=16, max_new_tokens=8, temperature=0.0, force_answer=True, batch_size=1
    )
    engine = RolloutEngine(policy.model, PolicyEncoder(policy.tokenizer, policy.image_processor), settings)
    sample = open_source(sample_video, "What is in the box?")
    env = open_env(sample, VISION, max_images=settings.max_images)
    r = engine.start(sample, env, 0)
    for text in (CLIP, CROP, BAD, GARBLED, "It says \\boxed{42 <i>}"):
        engine.force_turn(r, text)
    assert r.answer == "42 <i>" and r.finish_reason == "answer"
    # the report is built from the trajectory as an eval row stores it (sha256s, no images)
    traj = Trajectory.from_dict(json.loads(json.dumps(r.to_trajectory().to_dict())))
    assert traj.tools_used() == ["clipping", "cropping", "clipping", None]
    assert traj.steps[0].thought == "Look <script>alert(1)</script> closer."
    assert traj.turn_texts() == r.turns and traj.final_text == r.turns[-1]

    out = write_report(traj, tmp_path / "report.html", model="tiny")
    page = out.read_text()
    assert page.count('<div class="step">') == 5
    assert (
        "tool call: <code>invalid tool call</code>" in page
        and "Execution error: tool call is not valid JSON" in page
    )
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<p class="answer">42 &lt;i&gt;</p>' in page and "finish reason: <code>answer</code>" in page
    assert "Execution error: frame 99 out of range; frames are numbered 1 to 6" in page

    found = figures(page)
    kinds = [c for c, _, _ in found]
    assert kinds == ["frame"] * 6 + ["returned"] * 2 + ["crop-source", "returned"]
    # the clip returned frames 1 and 3, captioned with their source frame index and time
    idx, ts = env.video.indices, env.video.timestamps()
    assert f"frame 1 (#{idx[0]}, {ts[0]:.2f} s)" in page and f"frame 3 (#{idx[2]}, {ts[2]:.2f} s)" in page
    # the crop of image 2 (frame 2), box widened by the 0.1 margin, drawn on frame 2
    _, source, region = found[8]
    assert region == "0.000000,0.000000,0.700000,0.700000"
    assert "frame 2 (#" in page and "box (0.000, 0.000, 0.700, 0.700)" in page
    w, h = source.size
    assert source.getpixel((1, h // 3)) == BOX_COLOUR  # left edge
    assert source.getpixel((round(0.7 * w) - 2, h // 3)) == BOX_COLOUR  # right edge
    assert source.getpixel((w // 3, 1)) == BOX_COLOUR  # top edge
    assert source.getpixel((w // 3, h // 3)) != BOX_COLOUR  # inside: the frame's own pixels
    assert source.getpixel((w - 2, h - 2)) != BOX_COLOUR  # outside the box
    # the crop the model saw is the returned image (upscaled to the crop pixel budget)
    crop = found[9][1]
    assert crop.size == r.ops[1].images[0].size and crop.width * crop.height >= VISION.crop_min_pixels
    assert image_digest(crop) == traj.steps[1].image_sha256[0]  # exactly the pixels the model was given


def test_inputs_are_checked_before_any_model_is_loaded(tmp_path, sample_video):
    with pytest.raises(AskError, match="question is empty"):
        open_source(sample_video, " ")
    with pytest.raises(AskError, match="video not found"):
        open_source(tmp_path / "x.mp4", "q")
    with pytest.raises(AskError, match="model not found"):
        load_model(tmp_path / "none")
    sample = open_source(sample_video, "  q ")
    assert sample["question"] == "q" and sample["answers"] == [] and sample["problem_type"] == "open"
