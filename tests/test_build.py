"""The data build on real generated videos: OCR, synthesis, QC, GX, atomic output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from videor4.core.io import read_jsonl
from videor4.data.build import (
    DATASETS,
    BuildError,
    build_config,
    build_datasets,
    load_synthetic_source,
    make_synthetic_source,
)
from videor4.data.build import validate_dataset as validate
from videor4.data.synthetic import synthetic_config
from videor4.data.validation import DataValidationError
from videor4.rumination.trajectory import Trajectory, replay
from videor4.rumination.video import FrameCache

PARAMS = {
    "seed": 0,
    "synthetic": {"n_videos": 5, "num_frames": 24, "questions_per_video": 3, "test_fraction": 0.2},
    "vision": {
        "num_frames": 6,
        "frame_max_pixels": 6272,
        "clip_max_pixels": 25088,
        "crop_min_pixels": 12544,
        "crop_max_pixels": 50176,
    },
    "data": {
        "ocr": {"max_videos": 1},
        "sizes": {"drp": 12, "crp": 12, "rl_d": 6, "rl_c": 6},
        "tokenizer_corpus": {"drp": 12, "crp": 12},
    },
}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_source(root / "synthetic", synthetic_config(PARAMS))
    return root / "synthetic"


@pytest.fixture(scope="module")
def built(tmp_path_factory, source_dir):
    out = tmp_path_factory.mktemp("built") / "built"
    cfg = build_config(PARAMS, out)
    cfg.ocr_cache_dir = tmp_path_factory.mktemp("ocr-cache")
    metrics = build_datasets(load_synthetic_source(source_dir), cfg, validate=validate)
    return out, metrics


def test_build_writes_every_dataset_with_metrics(built):
    out, m = built
    assert DATASETS == ("samples_train", "samples_val", "samples_test", "sft_drp", "sft_crp", "rl_d", "rl_c")
    for name in DATASETS:
        assert (out / f"{name}.jsonl").is_file()
    assert m["n_videos"] == 5
    # 5 videos: test_fraction 0.2 makes video 0 test, val_fraction 0.15 the first of the others val
    assert (m["n_samples_train"], m["n_samples_val"], m["n_samples_test"]) == (9, 3, 3)
    assert m["n_drp"] == 12 and m["n_crp"] == 12
    assert m["n_drp_clip"] > 0 and m["n_drp_crop"] > 0
    assert 0 < m["n_rl_d"] <= 6 and 0 < m["n_rl_c"] <= 6
    assert m["ocr_videos"] == 1 and m["ocr_gt_boxes"] > 0
    assert m["ocr_gt_agreement"] >= 0.5  # RapidOCR reads the generator's text at full resolution
    assert m["evidence_origin"].get("ocr", 0) > 0
    assert isinstance(m["dropped"], dict) and m["seconds"] > 0
    assert not list(out.parent.glob(".built.building-*"))


def test_trajectories_are_atomic_or_compositional_and_replay(built):
    out, _ = built
    drp = [Trajectory.from_dict(r) for r in read_jsonl(out / "sft_drp.jsonl")]
    crp = [Trajectory.from_dict(r) for r in read_jsonl(out / "sft_crp.jsonl")]
    for t in drp:
        assert len(set(t.tools_used())) == 1, t.traj_id
    assert any(t.tools_used()[0] == "clipping" and "cropping" in t.tools_used() for t in crp)
    for t in drp[:3] + crp[:3]:
        assert all(Path(p).is_file() and str(out) in p for s in t.steps for p in s.images)
        result = replay(t, cache=FrameCache())
        assert result.ok, result.problems


def test_crp_crops_name_the_clipped_frame_or_the_frame_as_shown(built, tmp_path, source_dir):
    n_frames = PARAMS["vision"]["num_frames"]

    def first_crop_targets(out: Path) -> list[int]:
        crp = [Trajectory.from_dict(r) for r in read_jsonl(out / "sft_crp.jsonl")]
        return [
            next(s.tool_call.arguments["target_image"] for s in t.steps if s.tool_call.name == "cropping")
            for t in crp
        ]

    # the paper's CRP: after the clip, the crop is drawn in a clipped frame (numbered after the shown ones)
    assert min(first_crop_targets(built[0])) > n_frames
    params = {**PARAMS, "data": {**PARAMS["data"], "synthesis": {"crp_crop_target": "frame"}}}
    cfg = build_config(params, tmp_path / "built")
    cfg.ocr_cache_dir = tmp_path / "ocr-cache"
    build_datasets(load_synthetic_source(source_dir), cfg, validate=validate)
    targets = first_crop_targets(tmp_path / "built")
    assert targets and max(targets) <= n_frames  # "frame": in the frame as first shown
    crp = [Trajectory.from_dict(r) for r in read_jsonl(tmp_path / "built" / "sft_crp.jsonl")]
    assert all(t.tools_used()[0] == "clipping" for t in crp)  # the clip still comes first
    assert replay(crp[0], cache=FrameCache()).ok


def test_val_is_its_own_split_written_like_test_and_never_trained_on(built):
    out, _ = built
    rows = {name: read_jsonl(out / f"{name}.jsonl") for name in DATASETS}
    videos = {name: {r["video"] for r in rows[f"samples_{name}"]} for name in ("train", "val", "test")}
    assert videos["val"] and videos["test"]
    assert not videos["val"] & videos["train"] and not videos["val"] & videos["test"]
    assert not videos["train"] & videos["test"]
    for split in ("val", "test"):
        assert {r["split"] for r in rows[f"samples_{split}"]} == {split}
        # scored like the test split: with the frames the model is shown
        assert all(r["frame_indices"] and r["num_source_frames"] > 0 for r in rows[f"samples_{split}"])
    val_ids = {r["sample_id"] for r in rows["samples_val"]}
    for name in ("sft_drp", "sft_crp", "rl_d", "rl_c"):  # only train feeds trajectories and RL sets
        assert not val_ids & {r["sample_id"] for r in rows[name]}, name
        assert not videos["val"] & {r["video"] for r in rows[name]}, name
    validate(rows["samples_val"], "samples_val")
    validate([], "samples_val")  # a world without val videos builds, like one without test videos


def test_rl_sets_are_disjoint_and_typed(built):
    out, _ = built
    rl_d, rl_c = read_jsonl(out / "rl_d.jsonl"), read_jsonl(out / "rl_c.jsonl")
    assert {r["tool_mode"] for r in rl_d} == {"single"} and {r["tool_mode"] for r in rl_c} == {"mixed"}
    assert not {r["sample_id"] for r in rl_d} & {r["sample_id"] for r in rl_c}
    assert all(r["question_kind"] not in ("compare", "count") for r in rl_d)


def test_bad_videos_are_skipped_and_counted(tmp_path, source_dir):
    source = load_synthetic_source(source_dir)
    videos = sorted({s.video for s in source.samples})
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(Path(videos[0]).read_bytes()[:1500])
    for s in source.samples:
        if s.video == videos[0]:
            s.video = str(corrupt)
        elif s.video == videos[1]:
            s.video = str(tmp_path / "missing.mp4")
    cfg = build_config(PARAMS, tmp_path / "built")
    cfg.ocr_max_videos = 0
    m = build_datasets(source, cfg, validate=validate)
    assert m["n_videos"] == 3 and m["n_videos_skipped"] == 2
    assert m["skipped"]["video_corrupt"] == 3 and m["skipped"]["video_missing"] == 3
    cfg.max_bad_fraction = 0.2
    with pytest.raises(BuildError, match="2 of 5 videos cannot be used"):
        build_datasets(source, cfg)


def test_invalid_data_fails_validation_and_keeps_previous_output(tmp_path, built, source_dir):
    out = tmp_path / "built"
    shutil.copytree(built[0], out)
    before = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    source = load_synthetic_source(source_dir)
    bad = next(s for s in source.samples if s.split == "train" and s.evidence)
    bad.evidence[0].bbox = [0.8, 0.2, 0.3, 0.4]  # x1 > x2
    bad.sample_id = "syn-broken"
    cfg = build_config(PARAMS, out)
    cfg.ocr_max_videos = 0
    cfg.synthesis.n_drp = cfg.synthesis.n_crp = 0
    with pytest.raises(DataValidationError) as info:
        build_datasets(source, cfg, validate=validate)
    message = str(info.value)
    assert "samples" in message and "syn-broken" in message
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == before
    assert not list(tmp_path.glob(".built.building-*"))


def test_a_page_deck_goes_through_the_same_build(tmp_path):
    """Documents: pages are the frames; OCR grounds the answer; trajectories crop the page."""
    from PIL import Image, ImageDraw, ImageFont

    from videor4.data.build import SourceData
    from videor4.data.sources.documents import load_page_folder

    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 14)
    except OSError:
        font = ImageFont.load_default(size=14)
    deck = tmp_path / "deck"
    deck.mkdir()
    for i in range(3):
        img = Image.new("RGB", (448, 320), "white")
        ImageDraw.Draw(img).text((300, 260), f"PAGE{i}" if i != 1 else "TOTAL 7K3X", font=font, fill="black")
        img.save(deck / f"p{i}.png")
    sample = load_page_folder(deck, "What is the total on the second page?", ["7K3X"])
    sample.split = "train"
    params = {
        **PARAMS,
        "vision": {**PARAMS["vision"], "num_frames": 3},
        "data": {"ocr": {"max_videos": 1}, "sizes": {"drp": 2, "crp": 3}},
    }
    cfg = build_config(params, tmp_path / "built")
    cfg.ocr_cache_dir = None
    # one question fills only one of the two RL sets
    m = build_datasets(
        SourceData(samples=[sample]), cfg, validate=lambda rows, ds: validate(rows, ds, allow_empty=True)
    )
    assert m["evidence_origin"] == {"ocr": 1}
    crp = [Trajectory.from_dict(r) for r in read_jsonl(tmp_path / "built" / "sft_crp.jsonl")]
    assert crp and all(t.final_answer == "7K3X" for t in crp)
    assert replay(crp[0], cache=FrameCache()).ok


def test_a_video_in_train_and_test_fails_the_build_and_keeps_the_last_one(tmp_path, source_dir, built):
    """Separation checked where it can fail: a source whose test split reuses a training video."""
    out, _ = built
    before = sorted(p.name for p in out.iterdir())
    source = load_synthetic_source(source_dir)
    train_video = next(s.video for s in source.samples if s.split == "train")
    leaked = next(s for s in source.samples if s.split != "train")
    leaked.video = train_video  # the test question now asks about a training video
    cfg = build_config(PARAMS, out)
    cfg.ocr_cache_dir = tmp_path / "ocr"
    with pytest.raises(DataValidationError, match="the splits are disjoint"):
        build_datasets(source, cfg, validate=validate)
    assert sorted(p.name for p in out.iterdir()) == before  # the last valid build stays


def test_a_video_in_train_and_val_fails_the_build_and_keeps_the_last_one(tmp_path, source_dir, built):
    """The splits check covers val too: a val question about a training video is a leak."""
    out, _ = built
    before = sorted(p.name for p in out.iterdir())
    source = load_synthetic_source(source_dir)
    train_video = next(s.video for s in source.samples if s.split == "train")
    leaked = next(s for s in source.samples if s.split == "val")
    leaked.video = train_video
    cfg = build_config(PARAMS, out)
    cfg.ocr_cache_dir = tmp_path / "ocr"
    with pytest.raises(DataValidationError, match="the splits are disjoint"):
        build_datasets(source, cfg, validate=validate)
    assert sorted(p.name for p in out.iterdir()) == before


def test_the_tokenizer_corpus_does_not_depend_on_the_data_sizes(tmp_path, source_dir, built):
    """base_model trains its tokenizer on tokenizer_corpus.jsonl: the same bytes at other sizes."""
    out, _ = built
    params = {**PARAMS, "data": {**PARAMS["data"], "sizes": {**PARAMS["data"]["sizes"], "drp": 5}}}
    cfg = build_config(params, tmp_path / "small")
    cfg.ocr_cache_dir = tmp_path / "ocr"
    build_datasets(load_synthetic_source(source_dir), cfg, validate=validate)
    assert len(read_jsonl(tmp_path / "small" / "sft_drp.jsonl")) == 5
    corpus = (out / "tokenizer_corpus.jsonl").read_bytes()
    assert (tmp_path / "small" / "tokenizer_corpus.jsonl").read_bytes() == corpus
    rows = read_jsonl(out / "tokenizer_corpus.jsonl")  # at the reference sizes: the SFT sets, text only
    sft = read_jsonl(out / "sft_drp.jsonl") + read_jsonl(out / "sft_crp.jsonl")
    assert [r["traj_id"] for r in rows] == [r["traj_id"] for r in sft]
    assert all(not step["observation"]["images"] for r in rows for step in r["steps"])
    assert not (tmp_path / "small" / "tokenizer_corpus_images").exists()
