"""The world check: its readers run on a generated world, the colour decoder can succeed and can fail,
and its params are strict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from videor4.core.params import ParamsError
from videor4.data.build import make_synthetic_source
from videor4.data.synthetic import (
    DIGIT_COLOURS,
    FONT_PATH,
    NEUTRAL_PANEL,
    STYLES,
    SyntheticConfig,
    glyph_boxes,
)
from videor4.data.world_check import (
    SoftmaxProbe,
    WorldCheckConfig,
    character_cells,
    decode_by_palette,
    scale_box,
    world_check,
    world_check_config,
)
from videor4.rumination.tools import VisionConfig
from videor4.rumination.video import resize_to_budget

ROOT = Path(__file__).resolve().parent.parent
LOW_RES = dict(frame_max_pixels=8 * 28 * 28, frame_min_pixels=4 * 28 * 28)  # the shipped 84x56 view
FAST = WorldCheckConfig(max_texts_per_split=60, probe_steps=40)


@pytest.fixture(scope="module", params=["readable", "legacy"])
def world(request, tmp_path_factory) -> tuple[str, dict]:
    # 4 videos: test, (val,) test, train whether or not the world has a val split
    root = tmp_path_factory.mktemp(request.param) / "synthetic"
    cfg = SyntheticConfig(
        n_videos=4, num_frames=8, num_shown_frames=4, test_fraction=0.5, workers=1, preset=request.param
    )
    make_synthetic_source(root, cfg)
    return request.param, world_check(root, VisionConfig(num_frames=4, **LOW_RES), cfg.style, FAST)


def _is_estimate(e: dict) -> bool:
    return 0.0 <= e["ci"][0] <= e["acc"] <= e["ci"][1] <= 1.0 and e["n"] > 0


def test_the_readers_run_on_a_generated_world(world):
    preset, m = world
    assert m["view_size"] == [84, 56] and m["source_size"] == [448, 252]
    assert all(m["n_texts"][s] > 0 and m["n_glyphs"][s] >= m["n_texts"][s] for s in ("train", "test"))
    for name in ("lowres_probe_acc_grey", "lowres_probe_acc_colour", "crop_probe_acc_grey"):
        assert _is_estimate(m[name]["glyph"]) and _is_estimate(m[name]["text"]), name
        assert m[name]["text"]["n"] == m["n_texts"]["test"]
    if preset == "readable":  # the preset inks each digit with its own colour
        assert _is_estimate(m["lowres_colour_decoder_acc"])
    else:
        assert m["lowres_colour_decoder_acc"] is None
    assert set(m["by_group"]) <= {"caption", "panel"}


def test_the_palette_decoder_reads_the_readable_view_and_not_the_hidden_one(tmp_path):
    """The same 4-video world drawn both ways: readable's digit inks give every code away in the
    84x56 view, hidden's one ink per text (and 2 px glyphs) give none."""
    acc = {}
    for preset in ("readable", "hidden"):
        cfg = SyntheticConfig(
            n_videos=4, num_frames=8, num_shown_frames=4, test_fraction=0.5, workers=1, preset=preset
        )
        make_synthetic_source(tmp_path / preset, cfg)
        m = world_check(tmp_path / preset, VisionConfig(num_frames=4, **LOW_RES), cfg.style, FAST)
        assert _is_estimate(m["lowres_colour_decoder_acc"]), preset
        acc[preset] = m["lowres_colour_decoder_acc"]["acc"]
    assert acc["readable"] >= 0.9 and acc["hidden"] <= 0.05, acc


def _drawn_code(code: str, ink: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, tuple]:
    """`code` drawn like a readable panel (one glyph at a time, 40 px) on the neutral panel of a
    448x252 frame; the frame and the code's ink box."""
    size, (x0, y0) = 40, (180.0, 100.0)
    img = Image.new("RGB", (448, 252), NEUTRAL_PANEL)
    draw, font = ImageDraw.Draw(img), ImageFont.truetype(FONT_PATH, size)
    for i, ch in enumerate(code):
        draw.text((x0 + font.getlength(code[:i]), y0), ch, font=font, fill=ink[ch])
    glyphs = [b for _, b in glyph_boxes(code, size)]
    box = (
        x0 + glyphs[0][0],
        y0 + min(b[1] for b in glyphs),
        x0 + glyphs[-1][2],
        y0 + max(b[3] for b in glyphs),
    )
    return np.asarray(img), box


def _decode_low_res(frame: np.ndarray, code: str, box: tuple) -> str:
    view = np.asarray(resize_to_budget(frame, LOW_RES["frame_max_pixels"], LOW_RES["frame_min_pixels"]))
    assert view.shape[:2] == (56, 84)
    sx, sy = view.shape[1] / frame.shape[1], view.shape[0] / frame.shape[0]
    cells = [scale_box(c, sx, sy) for c in character_cells(code, box)]
    return decode_by_palette(view, cells, DIGIT_COLOURS, NEUTRAL_PANEL)


def test_the_colour_decoder_reads_a_palette_code_and_fails_without_the_palette():
    code = "3807"
    frame, box = _drawn_code(code, DIGIT_COLOURS)
    assert _decode_low_res(frame, code, box) == code
    # each digit inked in the next digit's colour: the decoder has only colour to go on, so it must miss
    shifted = {d: DIGIT_COLOURS[str((int(d) + 1) % 10)] for d in DIGIT_COLOURS}
    frame, box = _drawn_code(code, shifted)
    misread = _decode_low_res(frame, code, box)
    assert misread != code and all(a != b for a, b in zip(misread, code))


def test_character_cells_follow_the_renderer():
    code, size = "4082", STYLES["readable"].code_font_sizes[0]
    glyphs = [b for _, b in glyph_boxes(code, size)]
    box = (glyphs[0][0] + 10, 5.0, glyphs[-1][2] + 10, 35.0)
    cells = character_cells(code, box)
    assert len(cells) == len(code)
    assert cells[0][0] == pytest.approx(box[0]) and cells[-1][2] == pytest.approx(box[2])
    assert all(a[0] < a[2] <= b[0] + 1 for a, b in zip(cells, cells[1:]))  # left to right, barely touching


def test_the_probe_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.eye(3)[y] * 2 + rng.normal(0, 0.1, (300, 3))
    probe = SoftmaxProbe.fit(x, y, 3, steps=100, lr=0.05, l2=1e-3)
    assert (probe.predict(x) == y).mean() == 1.0


def test_params_are_strict_and_the_shipped_section_is_the_default():
    with pytest.raises(ParamsError, match=r"unknown params world_check: probe_stpes"):
        world_check_config({"world_check": {"probe_stpes": 3}})
    with pytest.raises(ValueError, match=r"probe_size"):
        world_check_config({"world_check": {"probe_size": [8]}})
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert dataclasses.asdict(world_check_config(shipped)) == dataclasses.asdict(WorldCheckConfig())
