"""Perception pretraining's examples: glyph, slot, colour and box labels through crop and resize,
the attention targets, scenes read back as the video decoder reads them, disjoint seeds,
determinism, the pass-through of a real base, and strict settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from videor4.core.params import ParamsError
from videor4.data.perception import (
    COLOURS,
    GLYPH_CLASSES,
    HELD_OUT_STREAM,
    MERGED_CELL,
    NO_COLOUR,
    NO_COORD,
    NO_GLYPH,
    NO_SLOT,
    TRAIN_STREAM,
    glyph_grid,
    make_example,
    slot_grid,
    task_of,
)
from videor4.data.synthetic import SyntheticConfig, decoded_like, generate_video, render_scene
from videor4.policy.model import ModelConfig
from videor4.rumination.protocol import (
    locate_phrase,
    outward_box,
    parse_turn,
    phrase_box,
    phrase_reading,
    phrase_thing,
    read_answer_turn,
)
from videor4.rumination.tools import VisionConfig
from videor4.train.pretrain import effective_steps, pretrain_settings

WORLD = SyntheticConfig(preset="readable")
VISION = VisionConfig(
    num_frames=8,
    frame_max_pixels=6272,
    clip_max_pixels=50176,
    crop_min_pixels=12544,
    crop_max_pixels=50176,
    box_step=0.1,
)


def test_glyph_labels_follow_the_crop_and_the_resize():
    # a 100x50 region at (40, 20) of the frame, shown at 200x100: a glyph centred at frame (65, 45)
    # lands at image (50, 50), merged cell (row 1, col 1); one outside the region is dropped
    image = Image.new("RGB", (196, 112))
    grid = glyph_grid(
        image, (40, 20, 138, 76), [("7", (60.0, 40.0, 70.0, 50.0)), ("3", (5.0, 5.0, 9.0, 9.0))]
    )
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
        # the final turn a read question gets: what it reads, then the answer copied from it
        assert (
            ex.messages[1]["content"] == read_answer_turn(ex.answer)
            and ex.answer.isdigit()
            and len(ex.answer) == 3
        )
        assert parse_turn(ex.messages[1]["content"]).answer == ex.answer
        assert phrase_reading(ex.messages[1]["content"]) == ex.answer
        # slots name the asked code's characters in reading order, in the cells its glyphs label
        slots = ex.slot_labels[0]
        assert slots.shape == grid.shape
        in_order = [
            (int(s), GLYPH_CLASSES[g])
            for s, g in sorted(zip(slots.reshape(-1), grid.reshape(-1)))
            if s != NO_SLOT
        ]
        assert [ch for _, ch in in_order] == [ex.answer[k] for k, _ in in_order] and len(in_order) >= 2


def test_multiple_choice_reads_name_the_option_that_holds_the_text():
    for i in range(10):
        ex = make_example("read_mc", WORLD, VISION, 0, TRAIN_STREAM, i)
        question, turn = ex.messages[0]["content"][1]["text"], ex.messages[1]["content"]
        options = [line[4:] for line in question.split("\n") if line[:1] == "(" and line[2:4] == ") "]
        # four distinct options, one of them the asked text, under the letter the answer gives
        assert len(set(options)) == 4 and options["ABCD".index(ex.choice)] == ex.answer
        assert turn == read_answer_turn(ex.answer, ex.choice) and parse_turn(turn).answer == ex.choice
        assert (
            phrase_reading(turn) == ex.answer
            and turn.startswith(ex.phrase)
            and f"That is option ({ex.choice})." in turn
        )
        # the image and its labels are a READ crop's
        assert ex.glyph_labels and ex.slot_labels and ex.task == "read_mc"
    letters = {make_example("read_mc", WORLD, VISION, 0, TRAIN_STREAM, i).choice for i in range(40)}
    assert letters == set("ABCD")  # the answer is not always in the same place


def test_slot_labels_count_the_asked_text_from_its_first_character():
    image = Image.new("RGB", (112, 56))
    target = [
        ("9", (10.0, 10.0, 20.0, 20.0)),
        ("1", (38.0, 10.0, 48.0, 20.0)),
        ("7", (66.0, 30.0, 76.0, 40.0)),
    ]
    grid = slot_grid(image, (0, 0, 112, 56), target)
    assert grid[0, 0] == 0 and grid[0, 1] == 1 and grid[1, 2] == 2
    assert (grid == NO_SLOT).sum() == grid.size - 3


@pytest.mark.parametrize("task, size", [("locate", (84, 56)), ("locate_clip", (280, 168))])
def test_locate_examples_label_colours_boxes_and_the_asked_text_cell(task, size):
    # LOCATE on the frame as first shown, LOCATE_CLIP on the frame as a clip returns it
    for i in range(10):
        ex = make_example(task, WORLD, VISION, 0, TRAIN_STREAM, i)
        image = ex.messages[0]["content"][0]["image"]
        assert ex.task == task and image.size == size
        colour, coords = ex.colour_labels[0], ex.coord_labels[0]
        cols = image.width // MERGED_CELL
        assert coords.shape == colour.shape + (4,)
        # the answer names the panel, then its box; the box is the asked text's
        said = ex.messages[1]["content"]
        box = phrase_box(said)
        assert said.startswith("The ") and box == outward_box(ex.evidence_box, 0.1)
        assert phrase_thing(said) in ex.messages[0]["content"][1]["text"]  # the panel the question asks of
        # ... then the crop call, which copies that box
        call = parse_turn(said).tool_call
        assert call.name == "cropping" and call.arguments == {"target_image": 1, "bbox_2d": box}
        # written outward to tenths, the box still holds the text
        assert (
            box[0] <= ex.evidence_box[0]
            and box[1] <= ex.evidence_box[1]
            and box[2] >= ex.evidence_box[2]
            and box[3] >= ex.evidence_box[3]
        )
        # the target cell holds the asked text: its colour is the question's, its box the answer's
        row, col = divmod(ex.target_cell, cols)
        asked = said[len("The ") :].split()[0]
        assert colour[row, col] == COLOURS.index(asked)
        assert [c / 10 for c in coords[row, col]] == pytest.approx(box)
        # a cell without a text centre has neither a colour nor a box
        empty = colour == NO_COLOUR
        assert (coords[empty] == NO_COORD).all() and (coords[~empty] >= 0).all()


def test_scenes_are_read_back_as_the_video_decoder_reads_the_mp4s(tmp_path):
    # coloured digits drawn into a short video and decoded by decord: decoded_like (colour at half
    # resolution) is much closer to what decord returns than the drawing itself; x264 adds little
    from PIL import ImageDraw

    from videor4.data.synthetic import DIGIT_COLOURS, _font, _write_mp4
    from videor4.rumination.video import load_frames

    img = Image.new("RGB", (224, 112), (236, 236, 230))
    draw = ImageDraw.Draw(img)
    for i, ch in enumerate("0123456789"):
        draw.text((4 + 22 * i, 30), ch, font=_font(24), fill=DIGIT_COLOURS[ch])
    raw = np.asarray(img)
    _write_mp4(tmp_path / "still.mp4", [raw] * 4, 8.0)
    decoded = load_frames(str(tmp_path / "still.mp4"), indices=[0]).frames[0].astype(int)
    assert (
        np.abs(decoded - decoded_like(raw).astype(int)).mean()
        < 0.5 * np.abs(decoded - raw.astype(int)).mean()
    )
    assert np.abs(decoded - decoded_like(raw).astype(int)).mean() < 2.0


def test_glyph_boxes_match_the_drawn_ink():
    scene = render_scene(WORLD, np.random.default_rng([0, TRAIN_STREAM, 5]))
    for text in scene.texts:
        for ch, (x1, y1, x2, y2) in text.glyphs:
            patch = scene.frame[int(y1) : int(math.ceil(y2)), int(x1) : int(math.ceil(x2))].astype(int)
            # saturated digit ink differs from the neutral panel (236, 236, 230) inside every glyph box
            assert (np.abs(patch - np.array([236, 236, 230])).sum(axis=-1) > 120).any(), (text.text, ch)


def test_phrase_thing_gives_the_named_thing_of_a_locate_phrase_or_none():
    turn = locate_phrase("red sign", [0.1, 0.2, 0.3, 0.4]) + " Let me zoom in."
    assert phrase_thing(turn) == "red sign" and phrase_box(turn) == [0.1, 0.2, 0.3, 0.4]
    assert phrase_thing("I think. " + turn) == "red sign"
    assert phrase_thing('It reads "917".') is None and phrase_thing("red sign is at [0.1, 0.2") is None


def test_examples_are_deterministic_and_the_streams_differ():
    a = make_example("locate", WORLD, VISION, 0, TRAIN_STREAM, 3)
    b = make_example("locate", WORLD, VISION, 0, TRAIN_STREAM, 3)
    c = make_example("locate", WORLD, VISION, 0, HELD_OUT_STREAM, 3)
    assert a.answer == b.answer and a.messages[0]["content"][1] == b.messages[0]["content"][1]
    assert np.array_equal(
        np.asarray(a.messages[0]["content"][0]["image"]), np.asarray(b.messages[0]["content"][0]["image"])
    )
    assert (a.answer, a.messages[0]["content"][1]) != (c.answer, c.messages[0]["content"][1])
    box = phrase_box(a.messages[1]["content"])
    assert box is not None and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


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
    legacy = SyntheticConfig(preset="legacy", n_videos=1, num_frames=8, num_shown_frames=4)
    readable = SyntheticConfig(preset="readable", n_videos=1, num_frames=8, num_shown_frames=4)
    _, a = generate_video("a", tmp_path / "a.mp4", legacy, np.random.default_rng([0, 0]))
    _, b = generate_video("b", tmp_path / "b.mp4", readable, np.random.default_rng([0, 0]))
    read_b = [s for s in b if s.question_kind == "read" and s.problem_type != "multiple_choice"]
    assert all(s.answers[0].isdigit() and len(s.answers[0]) == 3 for s in read_b)
    with pytest.raises(ValueError, match="synthetic.preset: 'big' is not one of legacy, readable"):
        SyntheticConfig(preset="big")
    assert a  # legacy questions exist and are unchanged in form


def _frame_hashes(frames) -> set[str]:
    import hashlib

    return {hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest() for f in frames}


def test_no_pretraining_render_is_a_frame_of_a_test_video(tmp_path, monkeypatch):
    """By content: every source frame of the test videos (as drawn, before encoding) against the
    scene of every pretraining example of a sample of the default mix, held-out renders included."""
    import videor4.data.perception as perception
    import videor4.data.synthetic as synthetic
    from videor4.data.perception import task_of

    cfg = SyntheticConfig(n_videos=4, num_frames=8, num_shown_frames=4, test_fraction=0.5, workers=1)
    drawn: list[np.ndarray] = []
    render_frames = synthetic._render_frames
    monkeypatch.setattr(
        synthetic, "_render_frames", lambda *a: (out := render_frames(*a), drawn.extend(out[0]))[0]
    )
    records, _ = synthetic.generate_dataset(tmp_path / "world", cfg)
    test_videos = [r for r in records if r.split == "test"]
    assert test_videos and len(drawn) == cfg.n_videos * cfg.num_frames
    video_frames = _frame_hashes(drawn)  # train videos too: a render reproducing any video is a leak

    scenes: list[np.ndarray] = []
    scene = perception.render_scene
    monkeypatch.setattr(
        perception, "render_scene", lambda *a, **k: (s := scene(*a, **k), scenes.append(s.frame))[0]
    )
    mix = {"read": 0.6, "locate": 0.3, "read_clip": 0.1}
    for i in range(40):
        perception.make_example(task_of(i, mix, cfg.seed), cfg, VISION, cfg.seed, TRAIN_STREAM, i)
        perception.make_example("read", cfg, VISION, cfg.seed, HELD_OUT_STREAM, i)
    assert len(scenes) >= 80
    assert not _frame_hashes(scenes) & video_frames
    # the check has teeth: a render that were a video's frame would be found
    assert _frame_hashes([*scenes, drawn[-1]]) & video_frames
