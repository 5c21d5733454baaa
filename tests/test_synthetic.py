"""The synthetic source: real mp4s, valid ground truth, well-formed questions, determinism."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from videor4.core.schema import OPTION_LETTERS, Sample, VideoRecord
from videor4.data.synthetic import ALPHABET, QUESTION_KINDS, SyntheticConfig, generate_dataset, video_split
from videor4.rumination.video import load_frames, resize_to_budget, uniform_indices

SMALL = dict(num_frames=16, num_shown_frames=8, preset="legacy")  # the tests below were written for legacy
LOW_RES_BUDGET = 8 * 28 * 28  # the shown-frame budget of the embedded default


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, SyntheticConfig, list[VideoRecord], list[Sample]]:
    root = tmp_path_factory.mktemp("syn")
    cfg = SyntheticConfig(n_videos=8, mc_fraction=0.5, seed=3, test_fraction=0.25, **SMALL)
    ticks: list[int] = []
    records, samples = generate_dataset(root, cfg, progress=ticks.append)
    assert ticks == [1] * cfg.n_videos
    return root, cfg, records, samples


def _boxes(record: VideoRecord, frame: int, text: str) -> list[list[float]]:
    return [b.bbox for b in record.text_boxes if b.frame == frame and b.text == text]


def test_deterministic_and_independent_of_n_videos(tmp_path):
    cfg = SyntheticConfig(n_videos=3, **SMALL)
    a = generate_dataset(tmp_path / "a", cfg)
    b = generate_dataset(tmp_path / "b", cfg)
    c = generate_dataset(tmp_path / "c", SyntheticConfig(n_videos=2, **SMALL))
    assert [r.to_dict() for r in a[0]] == [r.to_dict() for r in b[0]]
    assert [s.to_dict() for s in a[1]] == [s.to_dict() for s in b[1]]
    for r in a[0]:
        assert _sha(tmp_path / "a" / r.path) == _sha(tmp_path / "b" / r.path)
    for r in c[0]:
        assert _sha(tmp_path / "a" / r.path) == _sha(tmp_path / "c" / r.path)
    assert sorted(p.name for p in (tmp_path / "a" / "videos").iterdir()) == [
        f"syn-0000{i}.mp4" for i in range(3)
    ]
    # A different seed gives different videos.
    d = generate_dataset(tmp_path / "d", SyntheticConfig(n_videos=1, seed=1, **SMALL))
    assert _sha(tmp_path / "d" / d[0][0].path) != _sha(tmp_path / "a" / a[0][0].path)


def test_the_bytes_do_not_depend_on_the_number_of_workers(tmp_path):
    """Videos are drawn over several processes; each has its own seeded rng, so one process or two
    write the same files and records, in the same order."""
    one = generate_dataset(tmp_path / "one", SyntheticConfig(n_videos=3, workers=1, **SMALL))
    ticks: list[int] = []
    two = generate_dataset(
        tmp_path / "two", SyntheticConfig(n_videos=3, workers=2, **SMALL), progress=ticks.append
    )
    assert ticks == [1, 1, 1]
    assert [r.to_dict() for r in one[0]] == [r.to_dict() for r in two[0]]
    assert [s.to_dict() for s in one[1]] == [s.to_dict() for s in two[1]]
    for r in one[0]:
        assert _sha(tmp_path / "one" / r.path) == _sha(tmp_path / "two" / r.path)


def test_videos_decode_with_configured_shape(dataset):
    root, cfg, records, samples = dataset
    for r in records:
        assert r.path == f"videos/{r.video_id}.mp4" and r.video_id.startswith("syn-")
        vf = load_frames(root / r.path, num_frames=cfg.num_frames)
        assert vf.num_source_frames == cfg.num_frames == r.num_frames
        assert (vf.width, vf.height) == (cfg.width, cfg.height) == (r.width, r.height)
        assert vf.fps == pytest.approx(cfg.fps)
        assert len(vf.frames) == cfg.num_frames and vf.frames[0].shape == (cfg.height, cfg.width, 3)
        # The background moves, so consecutive frames differ.
        assert np.abs(vf.frames[0].astype(int) - vf.frames[-1].astype(int)).mean() > 0.5
    assert {s.video for s in samples} <= {r.path for r in records}


def test_text_boxes_valid_and_on_rendered_text(dataset):
    root, cfg, records, _ = dataset
    for r in records:
        assert r.text_boxes
        for b in r.text_boxes:
            x1, y1, x2, y2 = b.bbox
            assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
            assert 0 <= b.frame < cfg.num_frames and b.text
            assert b.role in {"target", "distractor", "caption", "title"}
        # Every target box covers real ink: dark and light pixels inside it.
        frame = load_frames(root / r.path, indices=[0]).frames[0]
        lum = frame.mean(axis=2)
        for b in (b for b in r.text_boxes if b.frame == 0 and b.role == "target"):
            x1, y1, x2, y2 = (round(v * s) for v, s in zip(b.bbox, (cfg.width, cfg.height) * 2))
            patch = lum[y1:y2, x1:x2]
            assert patch.max() - patch.min() > 120, (r.video_id, b.text)


def test_transient_text_visible_in_exactly_one_shown_frame(dataset):
    _, cfg, records, samples = dataset
    shown = uniform_indices(cfg.num_frames, cfg.num_shown_frames)
    by_id = {r.video_id: r for r in records}
    transient = [s for s in samples if s.question_kind == "transient"]
    assert transient
    for s in transient:
        text = s.meta.get("answer_text", s.answers[0])
        record = by_id[s.sample_id.rsplit("-q", 1)[0]]
        visible = sorted({b.frame for b in record.text_boxes if b.text == text})
        assert len([f for f in visible if f in shown]) == 1
        assert len(visible) <= 3 and visible == list(range(visible[0], visible[-1] + 1))
        assert len(s.evidence) == 1 and s.evidence[0].frame in shown and s.evidence[0].text == text


def test_evidence_on_shown_frames_and_consistent(dataset):
    _, cfg, records, samples = dataset
    shown = set(uniform_indices(cfg.num_frames, cfg.num_shown_frames))
    by_id = {r.video_id: r for r in records}
    for s in samples:
        record = by_id[s.sample_id.rsplit("-q", 1)[0]]
        assert s.source == "synthetic" and s.split == record.split and s.evidence
        for e in s.evidence:
            assert e.frame in shown and e.origin == "ground_truth"
            assert e.bbox in _boxes(record, e.frame, e.text)
        answer = s.meta.get("answer_text", s.answers[0])
        texts = {e.text for e in s.evidence}
        if s.question_kind in ("read", "transient"):
            assert texts == {answer}
        elif s.question_kind == "compare":
            assert len(texts) == 2 and answer == max(texts, key=int)
        elif s.question_kind == "count":
            assert answer == str(len(texts)) and len(texts) >= 2


def test_multiple_choice_and_open_answers(dataset):
    _, _, _, samples = dataset
    mc = [s for s in samples if s.problem_type == "multiple_choice"]
    assert mc and len(mc) < len(samples)
    for s in samples:
        assert s.sample_id.startswith("syn-") and "-q" in s.sample_id
        if s.problem_type == "multiple_choice":
            assert len(s.options) == 4 and len(set(s.options)) == 4
            assert len(s.answers) == 1 and s.answers[0] in OPTION_LETTERS[:4]
            assert s.options[OPTION_LETTERS.index(s.answers[0])] == s.meta["answer_text"]
            assert "(D)" in s.prompt_question()
        else:
            assert s.options is None and len(s.answers) == 1
        answer = s.meta.get("answer_text", s.answers[0])
        assert answer and set(answer) <= set(ALPHABET)
    assert len({s.sample_id for s in samples}) == len(samples)


def test_all_question_kinds_and_splits(dataset):
    _, cfg, records, samples = dataset
    assert {s.question_kind for s in samples} == set(QUESTION_KINDS)
    assert all(len([s for s in samples if s.video == r.path]) == cfg.questions_per_video for r in records)
    # test_fraction 0.25 over 8 videos: exactly 2 test videos, chosen by index; val_fraction 0.15:
    # 1 in 5 of the other 6 (0 first), i.e. 2 val videos
    splits = [r.split for r in records]
    assert (splits.count("test"), splits.count("val"), splits.count("train")) == (2, 2, 4)
    assert splits == [video_split(i, cfg) for i in range(cfg.n_videos)]


def _is_test_before_val(index: int, fraction: float) -> bool:
    """The test rule from before the val split, verbatim: the test videos must stay these."""
    f = Fraction(fraction).limit_denominator(10_000)
    return math.ceil((index + 1) * f) > math.ceil(index * f)


@pytest.mark.parametrize(
    "test_fraction, val_fraction",
    [(0.35, 0.15), (0.25, 0.15), (0.2, 0.3), (0.35, 0.0), (0.5, 0.1), (0.0, 0.2)],
)
def test_val_videos_are_an_even_share_apart_from_unchanged_test_videos(test_fraction, val_fraction):
    cfg = SyntheticConfig(test_fraction=test_fraction, val_fraction=val_fraction)
    n = 3000
    splits = [video_split(i, cfg) for i in range(n)]
    assert set(splits) <= {"train", "val", "test"}  # one split per video: disjoint by construction
    assert [s == "test" for s in splits] == [_is_test_before_val(i, test_fraction) for i in range(n)]
    assert abs(splits.count("val") - val_fraction * n) <= 1  # of all videos, not of the non-test ones
    for start in range(0, n, 200):  # spread evenly, not bunched at one end
        window = splits[start : start + 200]
        assert abs(window.count("val") - val_fraction * 200) <= 2


def test_the_default_world_has_train_val_and_test_videos():
    cfg = SyntheticConfig()  # params.yaml's: 160 videos, test 0.35, val 0.15
    splits = [video_split(i, cfg) for i in range(cfg.n_videos)]
    assert (splits.count("test"), splits.count("val"), splits.count("train")) == (56, 24, 80)


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"val_fraction": -0.1}, "synthetic.val_fraction"),
        ({"test_fraction": 0.5, "val_fraction": 0.5}, r"synthetic.test_fraction \+ synthetic.val_fraction"),
        ({"test_fraction": 0.9}, r"synthetic.test_fraction \+ synthetic.val_fraction"),
    ],
)
def test_fractions_that_leave_no_training_videos_are_rejected(fractions, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**fractions)


def test_small_text_illegible_at_low_res_legible_at_full(dataset):
    root, cfg, records, _ = dataset
    frame = load_frames(root / records[0].path, indices=[0]).frames[0]
    low_w, low_h = resize_to_budget(frame, LOW_RES_BUDGET).size
    targets = [b for r in records for b in r.text_boxes if b.role == "target"]
    assert targets
    for b in targets:
        full_px = (b.bbox[3] - b.bbox[1]) * cfg.height
        low_px = (b.bbox[3] - b.bbox[1]) * low_h
        assert full_px >= 10 - 1e-6, b
        assert low_px < 5, b


def test_transient_window_never_reaches_another_shown_frame():
    from videor4.data.synthetic import _transient_window

    assert _transient_window(uniform_indices(32, 8), 3, 32) == range(12, 15)
    assert _transient_window(uniform_indices(16, 8), 1, 16) == range(1, 4)  # shown 0, 2, 4
    assert _transient_window(list(range(8)), 3, 8) == range(3, 4)  # every frame shown


def test_odd_frame_size_rejected(tmp_path):
    with pytest.raises(ValueError, match="even"):
        generate_dataset(tmp_path, SyntheticConfig(n_videos=1, width=447, **SMALL))
