"""The Style knobs of the `hidden` candidate world (ink per text, several fonts, offsets) leave the presets
that do not ask for them byte-identical, and `hidden` draws what it says."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from videor4.data.synthetic import (
    BOLD_FONTS,
    FONT_PATH,
    INKS,
    STYLES,
    SyntheticConfig,
    _layout_panel,
    _Panel,
    generate_video,
    glyph_boxes,
    render_scene,
)

# md5s the code gave before the knobs existed (commit 1781f92's synthetic.py), for videos of 8 source
# frames (4 shown) and still scenes; `_fingerprints` computes them
PINNED = {
    "readable/video0": ("e5e7943051b91ad164781891e4e1ed54", "5a8cc08250b57d74ac1cdeb67a36a204"),
    "readable/video1": ("e404ae49b17a4e53c10d285514c9ed03", "0211fe27587fc6dbc2ec87f7fe95d7f4"),
    "legacy/video0": ("afa9bd40325087ee74ef0f2b16ab39b9", "07fe278b2aeb78a79e2a476d202b4933"),
    "readable/scene0": ("e4559e487ec092ff86a12faf3a0e9ade", None),
    "readable/scene1": ("0862414afd411238cc75bf48345dd1d2", None),
    "legacy/scene0": ("d50b4b64c625e942113aeb13b9064017", None),
}


def _video_fingerprint(preset: str, index: int, tmp: Path) -> tuple[str, str]:
    """(md5 of the mp4, md5 of its text boxes and questions) of one small video."""
    cfg = SyntheticConfig(n_videos=3, num_frames=8, num_shown_frames=4, preset=preset, workers=1)
    path = tmp / f"{preset}-{index}.mp4"
    record, samples = generate_video(f"v{index}", path, cfg, np.random.default_rng([0, index]))
    meta = [dataclasses.asdict(t) for t in record.text_boxes] + [
        [s.question, s.answers, s.options, [dataclasses.asdict(e) for e in s.evidence]] for s in samples
    ]
    return hashlib.md5(path.read_bytes()).hexdigest(), hashlib.md5(json.dumps(meta).encode()).hexdigest()


def _scene_fingerprint(preset: str, index: int) -> str:
    cfg = SyntheticConfig(num_frames=8, num_shown_frames=4, preset=preset)
    scene = render_scene(cfg, np.random.default_rng([5, index]), caption_chance=0.5)
    h = hashlib.md5(scene.frame.tobytes())
    h.update(repr([(t.panel, t.kind, t.text, t.box, t.glyphs) for t in scene.texts]).encode())
    return h.hexdigest()


def _fingerprints(tmp: Path) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for key in PINNED:
        preset, what = key.split("/")
        index = int(what[-1])
        out[key] = (
            _video_fingerprint(preset, index, tmp)
            if what.startswith("video")
            else (
                _scene_fingerprint(preset, index),
                None,
            )
        )
    return out


def test_presets_without_the_knobs_draw_the_same_bytes(tmp_path: Path) -> None:
    assert _fingerprints(tmp_path) == PINNED


def test_the_knobs_default_to_the_drawing_before_them() -> None:
    for name in ("readable", "legacy"):
        style = STYLES[name]
        assert (style.ink, style.fonts, style.offset) == ("digit", (FONT_PATH,), 0)
    assert glyph_boxes("407", 40) == glyph_boxes("407", 40, FONT_PATH)
    with pytest.raises(ValueError, match="ink"):
        dataclasses.replace(STYLES["readable"], ink="rainbow")
    with pytest.raises(ValueError, match="fonts"):
        dataclasses.replace(STYLES["readable"], fonts=())


def test_hidden_inks_each_text_in_one_colour_of_its_own_in_one_font() -> None:
    style = STYLES["hidden"]
    assert style.ink == "per_text" and style.fonts == (FONT_PATH,) and style.digit_colours
    rng = np.random.default_rng(3)
    inks = set()
    for _ in range(60):
        panel = _Panel("plate", "red")
        _layout_panel(panel, rng, ["123", "456", "789"], style)
        for t in panel.main_texts():
            assert t.size in style.code_font_sizes and t.ink in INKS and t.font == FONT_PATH
            inks.add(t.ink)
    assert inks == set(INKS)


def test_the_fonts_knob_draws_each_text_in_one_of_several_fonts() -> None:
    """The six-font `hidden` of world_design.py's candidates (one font was chosen: it reads faster)."""
    style = dataclasses.replace(STYLES["hidden"], fonts=BOLD_FONTS)
    assert all(Path(f).is_file() for f in BOLD_FONTS)
    rng = np.random.default_rng(3)
    fonts = set()
    for _ in range(60):
        panel = _Panel("plate", "red")
        _layout_panel(panel, rng, ["123", "456", "789"], style)
        fonts.update(t.font for t in panel.main_texts())
    assert fonts == set(BOLD_FONTS)


def test_hidden_scenes_box_their_glyphs_in_their_own_font() -> None:
    cfg = SyntheticConfig(preset="hidden")
    scene = render_scene(cfg, np.random.default_rng(0), caption_chance=1.0)
    assert scene.texts
    for t in scene.texts:
        x1, y1, x2, y2 = (v * s for v, s in zip(t.box, (cfg.width, cfg.height) * 2))
        assert y2 - y1 <= 10  # ~8 px digits: under 2 px of the 84x56 view
        for _, (a, b, c, d) in t.glyphs:  # each glyph inside the text's ink box (rounded to pixels)
            assert x1 - 1 <= a and c <= x2 + 1 and y1 - 1 <= b and d <= y2 + 1


# the `hidden` world's crop settings (README, "The embedded world"): boxes in fiftieths, a tight margin,
# crops upscaled to ~29 px glyphs, and a smallest crop its smallest codes pass
HIDDEN_VISION = {"box_step": 0.02, "crop_margin": 0.04, "crop_min_pixels": 25088, "min_crop_side": 16}


def test_the_hidden_world_and_its_crop_settings_teach_every_read_crop():
    """READ in `hidden`: the crop tool takes every text's box as pretraining cuts it (the smallest
    codes, widened by the tight margin, are ~28 px tall: a 28 px minimum side refused 13 %)."""
    import yaml

    from videor4.data.perception import HELD_OUT_STREAM, make_example
    from videor4.data.synthetic import synthetic_config
    from videor4.rumination.tools import vision_config

    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    params["synthetic"]["preset"] = "hidden"
    params["vision"].update(HIDDEN_VISION)
    world, vision = synthetic_config(params), vision_config(params)
    for i in range(120):
        example = make_example("read", world, vision, 0, HELD_OUT_STREAM, i)
        assert example.answer and example.task == "read"
    too_strict = dataclasses.replace(vision, min_crop_side=28)
    with pytest.raises(ValueError, match="the crop tool refuses the text's own box: crop region too small"):
        for i in range(120):
            make_example("read", world, too_strict, 0, HELD_OUT_STREAM, i)
