"""Object-detection evidence: a real (tiny, randomly initialised) OWLv2 loaded through
transformers' Auto classes, its content-addressed cache, phrases from questions, and scoring."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from videor4.data.detection import (
    Detection,
    DetectionCache,
    ZeroShotDetector,
    best_detection,
    build_tiny_detector,
    detect_cached,
    detection_gt_agreement,
    noun_phrases,
)

H, W = 252, 448
PHRASES = ["red sign", "green panel"]


def frames() -> list[np.ndarray]:
    """Two dark 448x252 frames: a red rectangle in one, a green one in the other."""
    out = [np.full((H, W, 3), (40, 60, 90), np.uint8) for _ in range(2)]
    out[0][50:120, 30:200] = (220, 30, 30)
    out[1][100:200, 250:400] = (30, 200, 30)
    return out


@pytest.fixture(scope="module")
def tiny_detector_dir(tmp_path_factory) -> Path:
    return build_tiny_detector(tmp_path_factory.mktemp("detector") / "tiny-owlv2", seed=0)


@pytest.fixture(scope="module")
def detector(tiny_detector_dir: Path) -> ZeroShotDetector:
    # Random weights score every box near sigmoid(0) = 0.5, so a zero threshold keeps them all.
    return ZeroShotDetector(tiny_detector_dir, box_threshold=0.0, max_per_phrase=2)


# ---------------------------------------------------------------- phrases from questions
@pytest.mark.parametrize(
    ("question", "phrases"),
    [
        ("What code is on the red sign?", ["red sign"]),
        (
            "Which is larger, the number on the blue panel or the one on the green panel?",
            ["blue panel", "green panel"],
        ),
        ("What does the black van on the right say?", ["black van"]),
        ("Is there a dog next to an old bus?", ["dog", "old bus"]),
        (
            "What is the price on the first red sign, and on the red sign at the end?",
            ["red sign"],
        ),  # de-duplicated
        ("What is written in the video?", []),
        ("How many cars appear at the end?", []),
        ("", []),
    ],
)
def test_noun_phrases(question: str, phrases: list[str]) -> None:
    assert noun_phrases(question) == phrases


# ---------------------------------------------------------------- the real detector
def test_tiny_detector_detects_through_auto_classes(detector: ZeroShotDetector) -> None:
    calls = detector.calls
    found = detector.detect(frames(), PHRASES, frame_indices=[5, 9])
    assert detector.calls == calls + 2
    assert len(found) == 2
    for index, per_frame in zip([5, 9], found):
        assert per_frame, "a zero threshold keeps boxes"
        assert [d.score for d in per_frame] == sorted((d.score for d in per_frame), reverse=True)
        for d in per_frame:
            assert d.frame == index and d.label in PHRASES
            x1, y1, x2, y2 = d.bbox
            assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0, d
            assert math.isfinite(d.score) and 0.0 < d.score < 1.0
        for phrase in PHRASES:
            assert sum(d.label == phrase for d in per_frame) <= 2  # max_per_phrase


def test_boxes_are_normalized_to_the_frame_not_owlv2s_padded_square(tiny_detector_dir: Path) -> None:
    # OWLv2 pads a 448x252 frame to a 448x448 square.  The tiny model's heads are near zero, so its
    # 16 boxes (4x4 patches) sit on OWLv2's box prior: 1/4 of the square wide and high, centred on
    # the patch grid's corners, so their edges fall on multiples of 1/8 of the square, 56 px: 1/8
    # of the frame's width but 56/252 of its height.  The prior's two bottom rows start below
    # y = 252 px, wholly in the padding, and are dropped; the row above them is clipped.
    everything = ZeroShotDetector(tiny_detector_dir, box_threshold=0.0, max_per_phrase=16)
    found = everything.detect(frames(), PHRASES)
    assert [len(per_frame) for per_frame in found] == [8, 8]
    step = 56
    for d in (d for per_frame in found for d in per_frame):
        x1, y1, x2, y2 = d.bbox
        assert y1 < y2 and x1 < x2, d
        for v, size in ((x1, W), (x2, W), (y1, H), (y2, H)):
            assert v == 1.0 or abs(v * size / step - round(v * size / step)) < 0.02, d
    assert sum(d.bbox[3] == 1.0 for per_frame in found for d in per_frame) == 8  # one row per frame clipped


def test_same_seed_same_weights_and_detections(
    tmp_path: Path, tiny_detector_dir: Path, detector: ZeroShotDetector
) -> None:
    from safetensors.torch import load_file

    again = build_tiny_detector(tmp_path / "again", seed=0)
    other = build_tiny_detector(tmp_path / "other", seed=1)
    a, b, c = (load_file(str(d / "model.safetensors")) for d in (tiny_detector_dir, again, other))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)

    same = ZeroShotDetector(again, box_threshold=0.0, max_per_phrase=2)
    assert same.detect(frames(), PHRASES) == detector.detect(frames(), PHRASES)
    assert same.id == detector.id  # identical files: the cache is shared
    assert ZeroShotDetector(other, box_threshold=0.0, max_per_phrase=2).id != detector.id


def test_bad_input_is_refused_before_loading_a_model() -> None:
    det = ZeroShotDetector("no/such/checkpoint")  # never loaded: input is checked first
    good = frames()[0]
    with pytest.raises(ValueError, match=r"frame 1: expected an HxWx3 uint8 RGB array, got dtype float32"):
        det.detect([good, good.astype(np.float32)], PHRASES)
    with pytest.raises(ValueError, match=r"frame 0: .*got dtype uint8 shape \(252, 448, 2\)"):
        det.detect([good[:, :, :2]], PHRASES)
    with pytest.raises(ValueError, match="no phrases to detect"):
        det.detect([good], [])
    with pytest.raises(ValueError, match="non-empty string"):
        det.detect([good], ["red sign", "  "])
    with pytest.raises(ValueError, match="2 frames but 1 frame indices"):
        det.detect([good, good], PHRASES, frame_indices=[3])
    assert det.calls == 0


# ---------------------------------------------------------------- the cache
def test_cache_runs_each_frame_content_once(tmp_path: Path, detector: ZeroShotDetector) -> None:
    cache = DetectionCache(tmp_path / "cache")
    imgs = frames()
    calls = detector.calls
    first = detect_cached(detector, cache, imgs, PHRASES, frame_indices=[5, 9])
    assert detector.calls == calls + 2
    assert first == detector.detect(imgs, PHRASES, frame_indices=[5, 9])
    calls = detector.calls
    assert len(list(cache.dir.rglob("*.json"))) == 2
    assert not [p for p in cache.dir.rglob("*") if p.is_file() and p.suffix != ".json"]  # no temporaries left

    # Same content, phrases in another order: nothing runs, same detections.
    assert detect_cached(detector, cache, imgs, PHRASES[::-1], frame_indices=[5, 9]) == first
    assert detector.calls == calls
    # The same pixels at other frame indices are hits too, stamped with the new indices.
    moved = detect_cached(detector, cache, imgs, PHRASES, frame_indices=[20, 21])
    assert detector.calls == calls
    assert [[d.frame for d in per] for per in moved] == [[20] * len(first[0]), [21] * len(first[1])]

    # One changed pixel: exactly that frame runs again.
    changed = [imgs[0], imgs[1].copy()]
    changed[1][0, 0, 0] ^= 1
    again = detect_cached(detector, cache, changed, PHRASES, frame_indices=[5, 9])
    assert detector.calls == calls + 1
    assert again[0] == first[0]
    # Identical frames within one call run once.
    fresh = imgs[0].copy()
    fresh[-1, -1] = 0
    detect_cached(detector, cache, [fresh, fresh.copy()], PHRASES)
    assert detector.calls == calls + 2


def test_cache_key_covers_pixels_shape_phrases_and_detector() -> None:
    img = frames()[0]
    key = DetectionCache.key(img, PHRASES, "det-a")
    assert key == DetectionCache.key(img.copy(), PHRASES[::-1], "det-a")
    flipped = img.copy()
    flipped[10, 10, 2] += 1
    others = {
        DetectionCache.key(flipped, PHRASES, "det-a"),
        DetectionCache.key(img.reshape(W, H, 3), PHRASES, "det-a"),  # same bytes, other shape
        DetectionCache.key(img, ["red sign"], "det-a"),
        DetectionCache.key(img, PHRASES, "det-b"),
    }
    assert len(others) == 4 and key not in others


def test_corrupt_cache_file_is_an_error_naming_it(tmp_path: Path, detector: ZeroShotDetector) -> None:
    cache = DetectionCache(tmp_path / "cache")
    imgs = frames()
    detect_cached(detector, cache, imgs, PHRASES)
    path = cache.path(cache.key(imgs[1], PHRASES, detector.id))
    assert path.exists()

    path.write_text('{"detections": [', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path.name}.*not valid JSON"):
        detect_cached(detector, cache, imgs, PHRASES)
    path.write_text(
        '{"detections": [{"label": "red sign", "bbox": [0.5, 0.1, 0.2], "score": 0.4}]}', encoding="utf-8"
    )
    with pytest.raises(ValueError, match=f"{path.name}: detection 0 is malformed"):
        detect_cached(detector, cache, imgs, PHRASES)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path.name}: not a detection cache file"):
        detect_cached(detector, cache, imgs, PHRASES)


# ---------------------------------------------------------------- records, choosing and scoring
def test_detection_record_round_trip_and_clipping() -> None:
    d = Detection(frame=3, label="red sign", bbox=[-0.1, 0.2, 0.5, 1.3], score=np.float32(0.75))
    assert d.bbox == [0.0, 0.2, 0.5, 1.0] and isinstance(d.score, float)
    assert Detection.from_dict(d.to_dict()) == d
    with pytest.raises(ValueError, match="x1 <= x2"):
        Detection(frame=0, label="x", bbox=[0.6, 0.0, 0.5, 1.0], score=0.5)
    with pytest.raises(ValueError, match="4 finite numbers"):
        Detection(frame=0, label="x", bbox=[0.0, 0.0, float("nan"), 1.0], score=0.5)


def test_best_detection_and_gt_agreement() -> None:
    def det(frame: int, label: str, score: float, bbox: list[float] | None = None) -> Detection:
        return Detection(frame=frame, label=label, bbox=bbox or [0.0, 0.0, 0.5, 0.5], score=score)

    found = [
        [det(2, "red sign", 0.6), det(2, "van", 0.95)],
        [det(4, "red sign", 0.8, [0.5, 0.5, 1.0, 1.0])],
        [det(6, "red sign", 0.8), det(6, "red sign", 0.9)],
    ]
    assert best_detection(found, [2, 4, 6], "red sign") == found[2][1]
    assert best_detection(found, [2, 4], "red sign") == found[1][0]
    assert (
        best_detection([[det(7, "van", 0.5)], [det(3, "van", 0.5)]], [3, 7], "van").frame == 3
    )  # tie: earliest
    assert best_detection(found, [4, 6], "van") is None
    assert best_detection(found, [], "red sign") is None

    gt = [0.0, 0.0, 0.5, 0.5]
    pairs = [
        (det(0, "a", 0.5, [0.0, 0.0, 0.5, 0.5]), gt),  # IoU 1
        (det(0, "a", 0.5, [0.0, 0.0, 0.5, 0.25]), gt),  # IoU 0.5: counts
        (det(0, "a", 0.5, [0.0, 0.0, 0.5, 0.2]), gt),  # IoU 0.4
        (None, gt),
    ]
    assert detection_gt_agreement(pairs) == (0.5, 4)
    assert detection_gt_agreement(pairs, min_iou=0.3) == (0.75, 4)
    assert detection_gt_agreement([]) == (0.0, 0)


def test_the_build_grounds_what_ocr_misses_by_detection_and_reports_agreement(
    small_built, tmp_path: Path
) -> None:
    """The data build with `data.detection.model: tiny`: where OCR cannot match the answer (here: an
    ANLS bar no reading can pass), the evidence's label is detected instead; QC then judges the crops
    against the generator's ground truth, so a detector that cannot see costs trajectories, not truth."""
    import copy

    from conftest import SMALL_PARAMS
    from videor4.core.io import read_jsonl
    from videor4.data.build import build_config, build_datasets, load_synthetic_source, validate_dataset

    params = copy.deepcopy(SMALL_PARAMS)
    params["data"]["ocr"] = {"max_videos": 1, "min_anls": 1.01}
    params["data"]["detection"] = {
        "model": "tiny",
        "max_videos": 1,
        "box_threshold": 0.0,
        "cache_dir": str(tmp_path / "det"),
    }
    cfg = build_config(params, tmp_path / "built")
    cfg.ocr_cache_dir = tmp_path / "ocr"
    metrics = build_datasets(
        load_synthetic_source(small_built.parent / "synthetic"), cfg, validate=validate_dataset
    )
    origins = metrics["evidence_origin"]
    assert origins.get("detection", 0) > 0 and "ocr" not in origins, origins
    assert metrics["detection_gt_boxes"] >= origins["detection"]
    assert 0.0 <= metrics["detection_gt_iou50"] <= 1.0 and 0.0 <= metrics["detection_gt_cover"] <= 1.0
    rows = read_jsonl(tmp_path / "built" / "rl_d.jsonl") + read_jsonl(
        tmp_path / "built" / "rl_c.jsonl"
    )  # the grounded evidence
    detected = [e for r in rows for e in r["evidence"] if e["origin"] == "detection"]
    assert detected and all(e["label"] and 0.0 <= min(e["bbox"]) <= max(e["bbox"]) <= 1.0 for e in detected)
    # cached by frame content: a second build runs the detector on no frame
    again = build_config(params, tmp_path / "built2")
    again.ocr_cache_dir = tmp_path / "ocr"
    from videor4.data import build as build_module

    runs = []
    real = build_module.detector_for

    def counting(*args, **kwargs):
        det = real(*args, **kwargs)
        runs.append(det)
        return det

    build_module.detector_for = counting
    try:
        second = build_datasets(
            load_synthetic_source(small_built.parent / "synthetic"), again, validate=validate_dataset
        )
    finally:
        build_module.detector_for = real
    assert runs and runs[0].calls == 0 and second["evidence_origin"] == origins
