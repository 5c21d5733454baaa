"""M4-ViteVQA loader: real annotation JSON, real tiny mp4s and frame folders, OCR files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videor4.core.schema import Sample, TextBox
from videor4.data.sources.m4vitevqa import M4ViteVQAConfig, load_m4vitevqa, load_video_ocr, task_and_split
from videor4.rumination.video import load_frames

SPLIT_FILE = "ViteVQA_0.0.2_t1s1train.json"


def write_mp4(path: Path, num_frames: int = 8, width: int = 64, height: int = 48) -> None:
    """A tiny real H.264 video whose frame i is filled with gray level 20 * i."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            img = np.full((height, width, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def item(qid: int, video_id: str, **over) -> dict:
    d = {
        "question": f"What is written on the sign? ({qid})",
        "question_id": qid,
        "video_id": video_id,
        "answers": ["stop", "stop sign"],
        "video_width": 64,
        "video_height": 48,
        "source1": "Single frame",
        "source2": "Text",
    }
    d.update(over)
    return d


def write_annotations(root: Path, items: list, name: str = SPLIT_FILE) -> Path:
    path = root / name
    doc = {"dataset_type": "train", "dataset_name": "vtvqa", "dataset_version": "0.0.2", "data": items}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "m4"
    write_mp4(root / "videos" / "00001.mp4")
    write_mp4(root / "videos" / "news" / "00002.mp4")  # nested one level
    frames = root / "videos" / "00003"  # stored as a frame folder
    frames.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (64, 48), (30 * i, 0, 0)).save(frames / f"{i:04d}.png")
    bad_missing_key = item(7, "00001")
    del bad_missing_key["question"]
    items = [
        item(1, "00001"),
        item(2, "00002", source1="Multi frame", source2="Knowledge", answers=["a", "b", "c"]),
        item(3, "00003", source2="Visual"),
        bad_missing_key,
        item(8, "00001", answers="stop"),  # answers not a list
        item(9, "00001", answers=["ok", 3]),  # answers not all strings
        item(10, "123"),  # bad video id
        item(11, 12345),  # video id not a string
        item(12, "00001", question="   "),  # empty question
        item(13, "00001", question_id="x"),
        item(14, "00001", video_width=0),
        "not an object",
        item(1, "00002"),  # duplicate question_id
        item(20, "00099"),  # video not on disk
        item(21, "00001", answers=[]),  # no answers
    ]
    write_annotations(root, items)
    return root


def test_load_counts_fields_and_skips(dataset: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="videor4.data.sources.m4vitevqa"):
        samples, skips = load_m4vitevqa(M4ViteVQAConfig(root=dataset, split_file=SPLIT_FILE))
    assert [s.sample_id for s in samples] == ["m4-t1s1-1", "m4-t1s1-2", "m4-t1s1-3"]
    assert skips == {
        "malformed_item:question": 2,
        "malformed_item:answers": 2,
        "malformed_item:video_id": 2,
        "malformed_item:question_id": 1,
        "malformed_item:video_width": 1,
        "malformed_item:type": 1,
        "duplicate_id": 1,
        "missing_video": 1,
        "missing_answers": 1,
    }
    assert "malformed_item:video_id" in caplog.text and SPLIT_FILE in caplog.text

    s1, s2, s3 = samples
    assert s1.video == "videos/00001.mp4"
    assert s2.video == "videos/news/00002.mp4"
    assert s3.video == "videos/00003"
    assert s1.question == "What is written on the sign? (1)"
    assert s1.answers == ["stop", "stop sign"] and s2.answers == ["a", "b", "c"]
    assert (s1.problem_type, s1.source, s1.split) == ("open", "m4vitevqa", "train")
    assert s1.question_kind == "single_frame_text"
    assert s2.question_kind == "multi_frame_knowledge"
    assert s3.question_kind == "single_frame_visual"
    assert s1.meta == {
        "video_id": "00001",
        "question_id": 1,
        "video_width": 64,
        "video_height": 48,
        "source1": "Single frame",
        "source2": "Text",
        "task": "t1s1",
    }
    # Rows survive the JSON round trip every later stage relies on.
    assert Sample.from_dict(json.loads(json.dumps(s2.to_dict()))) == s2


def test_loaded_paths_give_frames(dataset: Path) -> None:
    samples, _ = load_m4vitevqa(M4ViteVQAConfig(root=dataset, split_file=SPLIT_FILE))
    for sample in samples:
        vf = load_frames(dataset / sample.video, num_frames=4, cache=None)
        assert len(vf.frames) == 4
        assert vf.frames[0].shape == (48, 64, 3)
    mp4 = load_frames(dataset / samples[0].video, num_frames=4, cache=None)
    assert mp4.num_source_frames == 8 and mp4.indices == [0, 2, 5, 7]
    # later frames are brighter: proves real decoding, not a blank buffer
    assert mp4.frames[-1].mean() > mp4.frames[0].mean() + 50


def test_unchecked_videos_and_missing_answers(dataset: Path) -> None:
    cfg = M4ViteVQAConfig(root=dataset, split_file=SPLIT_FILE)
    samples, skips = load_m4vitevqa(cfg, check_videos=False, allow_missing_answers=True)
    by_id = {s.sample_id: s for s in samples}
    assert by_id["m4-t1s1-20"].video == "videos/00099.mp4"  # default path, not checked
    assert by_id["m4-t1s1-21"].answers == []
    assert "missing_video" not in skips and "missing_answers" not in skips


def test_test_split_without_answers(tmp_path: Path) -> None:
    write_mp4(tmp_path / "videos" / "00005.mp4", num_frames=2)
    no_answers = item(5, "00005")
    del no_answers["answers"]
    write_annotations(tmp_path, [no_answers], name="ViteVQA_0.0.2_t2test.json")
    cfg = M4ViteVQAConfig(root=tmp_path, split_file="ViteVQA_0.0.2_t2test.json")
    samples, skips = load_m4vitevqa(cfg)
    assert samples == [] and skips == {"missing_answers": 1}
    samples, skips = load_m4vitevqa(cfg, allow_missing_answers=True)
    assert [(s.sample_id, s.split, s.answers, s.meta["task"]) for s in samples] == [
        ("m4-t2-5", "test", [], "t2")
    ]


def test_split_file_as_path_and_names(dataset: Path, tmp_path: Path) -> None:
    path = dataset / SPLIT_FILE
    samples, _ = load_m4vitevqa(M4ViteVQAConfig(root=dataset, split_file=str(path)))
    assert len(samples) == 3
    assert task_and_split(Path("ViteVQA_0.0.2_t1s2val.json")) == ("t1s2", "val")
    assert task_and_split(Path("ViteVQA_0.0.2_t2extra.json")) == ("t2extra", "train")
    with pytest.raises(ValueError, match="task/split"):
        task_and_split(Path("renamed.json"))
    assert task_and_split(Path("renamed.json"), task="t2", split="val") == ("t2", "val")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ('{"dataset_name": "vtvqa"}', "'data' is missing"),
        ('{"data": {"0": {}}}', "'data' must be a list"),
    ],
)
def test_bad_file_raises_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / SPLIT_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as exc:
        load_m4vitevqa(M4ViteVQAConfig(root=tmp_path, split_file=SPLIT_FILE))
    assert SPLIT_FILE in str(exc.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="annotation file not found.*ViteVQA_0.0.2_t1s2test.json"):
        load_m4vitevqa(M4ViteVQAConfig(root=tmp_path, split_file="ViteVQA_0.0.2_t1s2test.json"))


def test_video_ocr(tmp_path: Path) -> None:
    cfg = M4ViteVQAConfig(root=tmp_path, split_file=SPLIT_FILE)
    assert load_video_ocr(cfg, "00001", 200, 100) is None  # no file
    ocr_dir = tmp_path / "video_ocr"
    ocr_dir.mkdir()
    layout = {
        "3": [{"ocr": "EXIT 12", "points": [20, 10, 60, 10, 60, 30, 20, 30]}],
        "0": [
            {"ocr": "STOP", "points": [-10, 50, 100, 50, 100, 120, -10, 120]},  # spills out: clamped
            {"ocr": "  ", "points": [0, 0, 1, 0, 1, 1, 0, 1]},  # empty text: dropped
        ],
    }
    (ocr_dir / "00001.json").write_text(json.dumps(layout), encoding="utf-8")
    boxes = load_video_ocr(cfg, "00001", 200, 100)
    assert boxes is not None and all(isinstance(b, TextBox) and b.role == "ocr" for b in boxes)
    by_text = {b.text: b for b in boxes}
    assert set(by_text) == {"STOP", "EXIT 12"}
    assert by_text["EXIT 12"].frame == 3
    assert by_text["EXIT 12"].bbox == pytest.approx([0.1, 0.1, 0.3, 0.3])
    assert by_text["STOP"].frame == 0
    assert by_text["STOP"].bbox == pytest.approx([0.0, 0.5, 0.5, 1.0])
    assert (
        load_video_ocr(M4ViteVQAConfig(root=tmp_path, split_file=SPLIT_FILE, ocr_dir=None), "00001", 200, 100)
        is None
    )


@pytest.mark.parametrize(
    "content",
    [
        "{oops",
        json.dumps({"0": [{"ocr": "A", "points": [1, 2, 3]}]}),
        json.dumps({"0": [{"text": "A"}]}),
        json.dumps({"0": "A"}),
        json.dumps({"first": []}),
    ],
)
def test_video_ocr_malformed_raises(tmp_path: Path, content: str) -> None:
    (tmp_path / "video_ocr").mkdir()
    (tmp_path / "video_ocr" / "00001.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="00001.json"):
        load_video_ocr(M4ViteVQAConfig(root=tmp_path, split_file=SPLIT_FILE), "00001", 200, 100)


@pytest.mark.parametrize(
    "caps, kept",
    [
        ({}, ["00001", "00002", "00003"]),
        ({"max_frames": 7}, ["00003"]),  # the mp4s have 8 frames, the frame folder 6
        ({"max_video_pixels": 64 * 48 - 1}, []),
        ({"max_video_bytes": 1}, []),
    ],
)
def test_caps_on_frames_pixels_and_bytes_skip_a_video_as_too_large(dataset, tmp_path, caps, kept) -> None:
    from collections import Counter

    from videor4.data.build import build_config, check_videos

    samples, _ = load_m4vitevqa(M4ViteVQAConfig(root=dataset, split_file=SPLIT_FILE))
    for s in samples:
        s.video = str(dataset / s.video)
    skipped: Counter = Counter()
    limits = build_config({"data": caps}, tmp_path).limits  # params data.max_frames, ...
    got, _ = check_videos(samples, 4, skipped, limits)
    assert [s.meta["video_id"] for s in got] == kept
    assert skipped == ({"video_too_large": 3 - len(kept)} if len(kept) < 3 else {})


def _m4_source_section(root: Path) -> dict:
    """`data.m4vitevqa` as params.yaml has it, with `root` set."""
    import dataclasses

    from videor4.data.build import M4ViteVQASourceParams

    return {**dataclasses.asdict(M4ViteVQASourceParams()), "root": str(root), "ocr_dir": None}


def test_the_build_reads_the_val_file_when_it_is_there(tmp_path: Path, caplog) -> None:
    """data.m4vitevqa.val_file: its questions form the val split; without the file, no val split."""
    from videor4.data.build import load_m4vitevqa_source

    root = tmp_path / "m4"
    section = _m4_source_section(root)
    for i, key in enumerate(("train_file", "val_file", "test_file"), start=1):
        write_mp4(root / "videos" / f"0000{i}.mp4")
        write_annotations(root, [item(i, f"0000{i}")], name=section[key])
    source = load_m4vitevqa_source(section)
    by_split = {s.split: (s.meta["video_id"], Path(s.video)) for s in source.samples}
    assert by_split == {
        "train": ("00001", root / "videos" / "00001.mp4"),
        "val": ("00002", root / "videos" / "00002.mp4"),
        "test": ("00003", root / "videos" / "00003.mp4"),
    }
    (root / section["val_file"]).unlink()
    with caplog.at_level(logging.INFO, logger="videor4.data.build"):
        source = load_m4vitevqa_source(section)
    assert sorted(s.split for s in source.samples) == ["test", "train"]
    assert [r.getMessage() for r in caplog.records if "val_file" in r.getMessage()] == [
        f"data.m4vitevqa.val_file {section['val_file']} is not under {root}: no val samples"
    ]
