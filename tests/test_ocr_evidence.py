"""OCR (real RapidOCR on rendered frames), its cache, and evidence matching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from videor4.core.schema import TextBox
from videor4.data.evidence import (
    box_coverage,
    box_iou,
    crop_covers,
    match_evidence,
    match_token,
    ocr_gt_agreement,
)
from videor4.data.ocr import OcrEngine, get_engine, load_ocr_file, ocr_to_text_boxes, ocr_video

W, H = 448, 252
FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if FONT_PATH.exists():
        return ImageFont.truetype(str(FONT_PATH), size)
    return ImageFont.load_default(size=size)


def render_frame(text: str | None, panel: tuple[int, int, int, int] = (230, 150, 430, 200)) -> np.ndarray:
    """A dark 448x252 frame, optionally with `text` at 24 px on a white panel."""
    img = Image.new("RGB", (W, H), (40, 60, 90))
    if text is not None:
        draw = ImageDraw.Draw(img)
        draw.rectangle(panel, fill=(255, 255, 255))
        draw.text((panel[0] + 10, panel[1] + 12), text, font=_font(24), fill=(0, 0, 0))
    return np.asarray(img)


def compact(s: str) -> str:
    return "".join(s.lower().split())


# ---------------------------------------------------------------- real OCR
@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine()


def test_ocr_video_reads_text_and_caches(tmp_path: Path, engine: OcrEngine) -> None:
    frames = [render_frame("CODE 7K3X"), render_frame(None)]
    calls = engine.calls
    ocr = ocr_video("00042", frames, [3, 9], tmp_path, engine=engine)
    assert engine.calls == calls + 2
    assert set(ocr) == {3, 9}
    assert ocr[9] == []  # nothing to read on a blank frame

    texts = [item["ocr"] for item in ocr[3]]
    assert any("7k3x" in compact(t) for t in texts), texts

    # The box is where the text was drawn (panel x 230..430, y 150..200).
    boxes = ocr_to_text_boxes(ocr, W, H)
    hit = next(b for b in boxes if "7k3x" in compact(b.text))
    assert hit.frame == 3 and hit.role == "ocr" and 0.5 < hit.score <= 1.0
    assert box_coverage(hit.bbox, [230 / W, 150 / H, 430 / W, 200 / H]) > 0.9
    x1, y1, x2, y2 = hit.bbox
    assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0

    # The cache file has the M4-ViteVQA third-party layout.
    path = tmp_path / "00042.json"
    raw = json.loads(path.read_text())
    assert set(raw) == {"3", "9"}
    assert raw["9"] == []
    item = raw["3"][0]
    assert isinstance(item["ocr"], str)
    assert len(item["points"]) == 8 and all(isinstance(v, float) for v in item["points"])
    assert load_ocr_file(path) == ocr

    # Cached frames are not OCR'd again; only the new index is.
    calls = engine.calls
    again = ocr_video("00042", frames, [3, 9], tmp_path, engine=engine)
    assert engine.calls == calls
    assert again == ocr
    more = ocr_video("00042", [frames[0], render_frame("EXIT 12")], [3, 4], tmp_path, engine=engine)
    assert engine.calls == calls + 1
    assert any("exit12" in compact(i["ocr"]) for i in more[4])
    assert set(json.loads(path.read_text())) == {"3", "4", "9"}

    # End to end: the answer "7K3X" is found as part of the line, on its right side.
    evidence = match_evidence(["7K3X"], ocr_to_text_boxes(ocr, W, H))
    assert [e.frame for e in evidence] == [3]
    assert compact(evidence[0].text) == "7k3x"
    assert evidence[0].bbox[0] > hit.bbox[0] + 0.3 * (hit.bbox[2] - hit.bbox[0])


def test_ocr_video_without_cache_dir(engine: OcrEngine) -> None:
    calls = engine.calls
    frame = render_frame(None)
    assert ocr_video("x", [frame], [0], None, engine=engine) == {0: []}
    assert engine.calls == calls + 1
    with pytest.raises(ValueError):
        ocr_video("x", [frame], [0, 1], None, engine=engine)


def test_get_engine_is_shared() -> None:
    assert get_engine() is get_engine()


# ---------------------------------------------------------------- OCR files
def test_load_ocr_file_third_party_layout(tmp_path: Path) -> None:
    path = tmp_path / "00001.json"
    path.write_text(
        json.dumps(
            {
                "0": [{"ocr": "SCORE 42", "points": [10, 20, 110, 20, 110, 40, 10, 40]}],
                "12": [{"ocr": 7, "points": [[0, 0], [5, 0], [5, 5], [0, 5]]}],  # nested points, numeric text
                "13": [],
            }
        )
    )
    ocr = load_ocr_file(path)
    assert ocr[0] == [{"ocr": "SCORE 42", "points": [10.0, 20.0, 110.0, 20.0, 110.0, 40.0, 10.0, 40.0]}]
    assert ocr[12][0]["ocr"] == "7" and len(ocr[12][0]["points"]) == 8
    assert ocr[13] == []
    boxes = ocr_to_text_boxes(ocr, 200, 100)
    assert boxes[0].bbox == pytest.approx([0.05, 0.2, 0.55, 0.4])
    assert boxes[0].score == 1.0  # no score in the file


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"a": []}),
        json.dumps({"-1": []}),
        json.dumps({"0": {"ocr": "x"}}),
        json.dumps({"0": [{"ocr": "x"}]}),
        json.dumps({"0": [{"ocr": "x", "points": [1, 2, 3]}]}),
        json.dumps({"0": [{"ocr": None, "points": [0] * 8}]}),
    ],
)
def test_load_ocr_file_malformed_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad_video.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad_video.json"):
        load_ocr_file(path)


def test_ocr_video_refuses_malformed_cache(tmp_path: Path) -> None:
    (tmp_path / "v1.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="v1.json"):
        ocr_video("v1", [render_frame(None)], [0], tmp_path, engine=OcrEngine())
    assert (tmp_path / "v1.json").read_text() == "[1, 2]"


def test_ocr_to_text_boxes_clamps() -> None:
    ocr = {
        2: [
            {"ocr": " hi ", "points": [-10, -5, 250, -5, 250, 50, -10, 50], "score": 0.8},
            {"ocr": " ", "points": [0] * 8},
        ]
    }
    (box,) = ocr_to_text_boxes(ocr, 200, 100)
    assert box.frame == 2 and box.text == "hi" and box.score == 0.8
    assert box.bbox == pytest.approx([0.0, 0.0, 1.0, 0.5])


# ---------------------------------------------------------------- evidence
def tb(frame: int, text: str, bbox: list[float]) -> TextBox:
    return TextBox(frame=frame, text=text, bbox=bbox, role="ocr")


def test_box_helpers() -> None:
    a = [0.0, 0.0, 0.5, 0.5]
    assert box_iou(a, a) == 1.0
    assert box_iou(a, [0.5, 0.5, 1.0, 1.0]) == 0.0
    assert box_iou(a, [0.25, 0.0, 0.75, 0.5]) == pytest.approx(1 / 3)
    assert box_coverage([0.1, 0.1, 0.2, 0.2], a) == 1.0
    assert box_coverage(a, [0.0, 0.0, 0.25, 0.5]) == pytest.approx(0.5)
    assert box_coverage([0.1, 0.1, 0.1, 0.2], a) == 0.0  # empty inner box
    assert box_iou([0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]) == 0.0


def test_match_token_kinds() -> None:
    whole = match_token("SCORE 42", "score 42")
    assert whole is not None and whole.score == 1.0 and (whole.start, whole.end) == (0, 8)
    word = match_token("42", "SCORE 42")
    assert word is not None and word.score == 1.0 and word.text == "42" and (word.start, word.end) == (6, 8)
    run = match_token("exit 12", "NEXT EXIT 12 MILES")
    assert run is not None and run.score == 1.0 and run.text == "EXIT 12"
    # space-merged OCR (RapidOCR): a character substring, spaces in the answer ignored
    merged = match_token("exit 12", "NEXTEXIT12MILES")
    assert merged is not None and merged.score == 1.0 and merged.text == "EXIT12"
    fuzzy = match_token("b12", "GateBl2closes")  # OCR read "1" as "l"
    assert fuzzy is not None and fuzzy.score == pytest.approx(2 / 3)
    # a line that keeps its spaces is not matched inside a word
    inside = match_token("cat", "concatenate strings")
    assert inside is not None and inside.score < 0.5
    assert match_token("", "abc") is None and match_token("abc", "  ") is None


def test_match_evidence_subspans_and_ordering() -> None:
    boxes = [
        tb(0, "SCORE 42", [0.1, 0.1, 0.5, 0.2]),
        tb(0, "42nd street", [0.1, 0.5, 0.5, 0.6]),
        tb(1, "SCORE 43", [0.1, 0.1, 0.5, 0.2]),  # ANLS 0.5: kept, ranked lower
        tb(2, "TOTAL 9", [0.1, 0.1, 0.5, 0.2]),  # no match
        tb(3, "SCORE42", [0.2, 0.3, 0.9, 0.4]),  # space-merged line
    ]
    ev = match_evidence(["42"], boxes)
    assert [e.frame for e in ev] == [0, 3, 1]
    assert all(e.origin == "ocr" for e in ev)
    # frame 0: the word "42" of the first line, its box cut by character proportion
    assert ev[0].text == "42"
    assert ev[0].bbox == pytest.approx([0.1 + 0.4 * 6 / 8, 0.1, 0.5, 0.2])
    assert ev[1].text == "42"
    assert ev[1].bbox == pytest.approx([0.2 + 0.7 * 5 / 7, 0.3, 0.9, 0.4])
    assert ev[2].text == "43"

    # frames restricts the search; min_anls drops weak matches
    assert [e.frame for e in match_evidence(["42"], boxes, frames={1, 2})] == [1]
    assert [e.frame for e in match_evidence(["42"], boxes, min_anls=0.9)] == [0, 3]
    # several answers: the best over them per frame
    ev2 = match_evidence(["total 9", "score 43"], boxes)
    assert [(e.frame, e.text) for e in ev2] == [
        (1, "SCORE 43"),
        (2, "TOTAL 9"),
        (0, "SCORE 42"),
        (3, "SCORE42"),
    ]
    assert match_evidence([], boxes) == []
    assert match_evidence(["zzz"], boxes) == []


def test_ocr_gt_agreement() -> None:
    ocr = [
        tb(0, "SCORE 42", [0.1, 0.1, 0.5, 0.2]),
        tb(1, "EXIT12", [0.1, 0.7, 0.4, 0.8]),
    ]
    gt = [
        TextBox(0, "42", [0.4, 0.1, 0.5, 0.2], role="target"),  # word inside an OCR line: found
        TextBox(0, "hello", [0.6, 0.6, 0.9, 0.7]),  # OCR missed it
        TextBox(1, "EXIT 12", [0.1, 0.7, 0.4, 0.8]),  # spaces dropped by OCR: found
        TextBox(1, "STOP", [0.1, 0.7, 0.4, 0.8]),  # right place, wrong text
        TextBox(2, "42", [0.1, 0.1, 0.5, 0.2]),  # frame not asked about
        TextBox(0, " ", [0.1, 0.1, 0.5, 0.2]),  # no text: not counted
    ]
    rate, n = ocr_gt_agreement(gt, ocr, frames={0, 1})
    assert n == 4 and rate == pytest.approx(0.5)
    # the same text in the wrong place does not count
    moved = [TextBox(0, "42", [0.6, 0.6, 0.9, 0.9])]
    assert ocr_gt_agreement(moved, ocr, frames={0}) == (0.0, 1)
    assert ocr_gt_agreement([], ocr, frames={0}) == (0.0, 0)


def test_a_crop_covers_the_evidence_once_widened_by_the_margin():
    evidence = [0.40, 0.40, 0.60, 0.50]
    # a box a little inside the text: the 0.1 margin on each side brings all of it in
    assert crop_covers([0.45, 0.42, 0.55, 0.48], evidence, margin=0.1)
    assert not crop_covers([0.45, 0.42, 0.55, 0.48], evidence, margin=0.0)
    # 0.15 to the right: the widened crop holds 0.15 of the text's 0.2 width (75 %), under 90 %
    shifted = [0.55, 0.40, 0.75, 0.50]
    assert not crop_covers(shifted, evidence, margin=0.1) and crop_covers(
        shifted, evidence, margin=0.1, share=0.7
    )
