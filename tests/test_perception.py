"""Perception pretraining's examples: glyph labels through crop and resize, disjoint seeds,
determinism, the pass-through of a real base, and strict settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from videor4.core.params import ParamsError
from videor4.data.perception import BACKGROUNDS, GLYPH_CLASSES, HELD_OUT_STREAM, NO_GLYPH, TRAIN_STREAM, glyph_grid, make_example, task_of
from videor4.data.synthetic import SyntheticConfig, generate_video, render_scene
from videor4.policy.model import ModelConfig
from videor4.rumination.tools import VisionConfig
from videor4.train.pretrain import effective_steps, parse_box, pretrain_settings

WORLD = SyntheticConfig(preset="readable")
VISION = VisionConfig(num_frames=8, frame_max_pixels=6272, clip_max_pixels=50176, crop_min_pixels=12544, crop_max_pixels=50176)


def test_glyph_labels_follow_the_crop_and_the_resize():
    # a 100x50 region at (40, 20) of the frame, shown at 200x100: a glyph centred at frame (65, 45)
    # lands at image (50, 50), merged cell (row 1, col 1); one outside the region is dropped
    image = Image.new("RGB", (196, 112))
    grid = glyph_grid(image, (40, 20, 138, 76), [("7", (60.0, 40.0, 70.0, 50.0)), ("3", (5.0, 5.0, 9.0, 9.0))])
    assert grid.shape == (4, 7)
    assert grid[1, 1] == GLYPH_CLASSES.index("7")
    assert (grid != NO_GLYPH).sum() == 1


def test_read_examples_label_every_glyph_of_the_asked_text_in_its_crop():
    for i in range(20):
        ex = make_example("read", WORLD, VISION, 0, TRAIN_STREAM, i)
        image = ex.messages[0]["content"][0]["image"]
        grid = ex.glyph_labels[0]
        assert grid.shape == (image.height // 28, image.width // 28)
        labelled = [GLYPH_CLASSES[c] for c in grid.reshape(-1) if c != NO_GLYPH]
        # the asked code's digits are all in view (two centres in one cell keep the later one)
        assert set(ex.answer) <= set(labelled) or len(set(labelled)) >= len(set(ex.answer)) - 1
        assert ex.messages[1]["content"] == ex.answer and ex.answer.isdigit() and len(ex.answer) == 3


def test_glyph_boxes_match_the_drawn_ink():
    scene = render_scene(WORLD, np.random.default_rng([0, TRAIN_STREAM, 5]))
    for text in scene.texts:
        for ch, (x1, y1, x2, y2) in text.glyphs:
            patch = scene.frame[int(y1):int(math.ceil(y2)), int(x1):int(math.ceil(x2))].astype(int)
            # saturated digit ink differs from the neutral panel (236, 236, 230) inside every glyph box
            assert (np.abs(patch - np.array([236, 236, 230])).sum(axis=-1) > 120).any(), (text.text, ch)


def test_examples_are_deterministic_and_the_streams_differ():
    a = make_example("locate", WORLD, VISION, 0, TRAIN_STREAM, 3)
    b = make_example("locate", WORLD, VISION, 0, TRAIN_STREAM, 3)
    c = make_example("locate", WORLD, VISION, 0, HELD_OUT_STREAM, 3)
    assert a.answer == b.answer and a.messages[0]["content"][1] == b.messages[0]["content"][1]
    assert np.array_equal(np.asarray(a.messages[0]["content"][0]["image"]), np.asarray(b.messages[0]["content"][0]["image"]))
    assert (a.answer, a.messages[0]["content"][1]) != (c.answer, c.messages[0]["content"][1])
    box = parse_box(a.answer)
    assert box is not None and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_pretraining_renders_never_reproduce_a_video(tmp_path):
    # videos draw from default_rng([seed, index]); examples from [seed, stream, index] with streams
    # no video index reaches, so the first frame of a video never equals a pretraining scene
    cfg = SyntheticConfig(preset="readable", n_videos=3, num_frames=8, num_shown_frames=4)
    video_codes = set()
    for index in range(3):
        record, _ = generate_video(f"v{index}", tmp_path / f"v{index}.mp4", cfg, np.random.default_rng([cfg.seed, index]))
        video_codes |= {(t.text, tuple(t.bbox)) for t in record.text_boxes}
    assert min(TRAIN_STREAM, HELD_OUT_STREAM) > 10**6 > cfg.n_videos
    for stream in (TRAIN_STREAM, HELD_OUT_STREAM):
        for i in range(30):
            scene = render_scene(cfg, np.random.default_rng([cfg.seed, stream, i]))
            assert not {(t.text, tuple(t.box)) for t in scene.texts} & video_codes
    assert BACKGROUNDS > 0


def test_task_mix_follows_its_weights():
    tasks = [task_of(i, {"read": 0.5, "locate": 0.3, "read_clip": 0.2}, 0) for i in range(2000)]
    assert abs(tasks.count("read") / 2000 - 0.5) < 0.05 and abs(tasks.count("read_clip") / 2000 - 0.2) < 0.04
    assert task_of(17, {"locate": 1.0}, 0) == "locate"


def test_a_real_base_passes_through_unless_steps_are_asked_for():
    settings = pretrain_settings({"pretrain": {"tiny_steps": 30}})
    assert effective_steps(settings, ModelConfig()) == 30
    assert effective_steps(settings, ModelConfig(name_or_path="Qwen/Qwen2.5-VL-7B-Instruct")) == 0
    asked = pretrain_settings({"pretrain": {"steps": 5}})
    assert effective_steps(asked, ModelConfig(name_or_path="Qwen/Qwen2.5-VL-7B-Instruct")) == 5


def test_pretrain_settings_are_strict():
    with pytest.raises(ParamsError, match="unknown params pretrain: step"):
        pretrain_settings({"pretrain": {"step": 3}})
    with pytest.raises(ValueError, match="unknown task 'count'"):
        pretrain_settings({"pretrain": {"tasks": {"count": 1.0}}})


def test_the_legacy_preset_still_draws_letters_and_the_readable_one_digits(tmp_path):
    legacy = SyntheticConfig(n_videos=1, num_frames=8, num_shown_frames=4)
    readable = SyntheticConfig(preset="readable", n_videos=1, num_frames=8, num_shown_frames=4)
    _, a = generate_video("a", tmp_path / "a.mp4", legacy, np.random.default_rng([0, 0]))
    _, b = generate_video("b", tmp_path / "b.mp4", readable, np.random.default_rng([0, 0]))
    read_b = [s for s in b if s.question_kind == "read" and s.problem_type != "multiple_choice"]
    assert all(s.answers[0].isdigit() and len(s.answers[0]) == 3 for s in read_b)
    with pytest.raises(ValueError, match="synthetic.preset: 'big' is not one of legacy, readable"):
        SyntheticConfig(preset="big")
    assert a  # legacy questions exist and are unchanged in form
