"""Document sources: MP-DocVQA JSON, SlidesVQA JSONL and plain page folders, with real page images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from videor4.core.schema import Sample
from videor4.data.sources.documents import load_mpdocvqa, load_page_folder, load_slidesvqa, page_paths
from videor4.rumination.video import load_frames


def page(path: Path, shade: int, size: tuple[int, int] = (80, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, shade, shade)).save(path)


# ---------------------------------------------------------------- MP-DocVQA
@pytest.fixture()
def mpdocvqa(tmp_path: Path) -> Path:
    root = tmp_path / "mpdocvqa"
    page(root / "images" / "doc1_p0.jpg", 10)
    page(root / "images" / "doc1_p1.png", 120)  # .png accepted too
    page(root / "images" / "doc1_p2.jpg", 240)
    page(root / "images" / "doc2_p0.jpg", 50)

    def q(qid, **over):
        d = {
            "questionId": qid,
            "question": "What is the total?",
            "doc_id": "doc1",
            "page_ids": ["doc1_p0", "doc1_p1", "doc1_p2"],
            "answers": ["$12", "12"],
            "answer_page_idx": 2,
        }
        d.update(over)
        return d

    data = [
        q(1),
        q(2, doc_id="doc2", page_ids=["doc2_p0"], answers=["yes"], answer_page_idx=0),
        q(3, page_ids=["doc1_p0", "doc1_p9"], answer_page_idx=1),  # a page image is missing
        q(4, answers="12"),  # answers not a list
        q(5, answer_page_idx=3),  # out of range
        q(6, question=""),
        q(7, page_ids=[]),
        q(1),  # duplicate
        ["not", "an", "object"],
    ]
    (root / "val.json").write_text(
        json.dumps({"dataset_name": "MP-DocVQA", "dataset_split": "val", "data": data}), encoding="utf-8"
    )
    return root


def test_mpdocvqa_load(mpdocvqa: Path) -> None:
    samples, skips = load_mpdocvqa(mpdocvqa, "val.json")
    assert [s.sample_id for s in samples] == ["mpdocvqa-1", "mpdocvqa-2"]
    assert skips == {
        "missing_page": 1,
        "malformed_item:answers": 1,
        "malformed_item:answer_page_idx": 1,
        "malformed_item:question": 1,
        "malformed_item:page_ids": 1,
        "duplicate_id": 1,
        "malformed_item:type": 1,
    }
    s = samples[0]
    assert (s.source, s.split, s.problem_type, s.evidence) == ("document", "val", "open", [])
    assert s.answers == ["$12", "12"]
    assert s.video == "images/doc1_p0.jpg"
    assert s.meta["pages"] == ["images/doc1_p0.jpg", "images/doc1_p1.png", "images/doc1_p2.jpg"]
    assert s.meta["answer_page_idx"] == 2 and s.meta["doc_id"] == "doc1"
    assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s

    vf = load_frames(page_paths(s, mpdocvqa), num_frames=4, cache=None)
    assert vf.num_source_frames == 3 and len(vf.frames) == 3
    assert [int(f.mean()) for f in vf.frames] == [10, 120, 240]  # document order kept


def test_mpdocvqa_test_split_and_errors(mpdocvqa: Path, tmp_path: Path) -> None:
    data = [{"questionId": 9, "question": "Who signed?", "doc_id": "doc2", "page_ids": ["doc2_p0"]}]
    (mpdocvqa / "test.json").write_text(json.dumps({"data": data}), encoding="utf-8")
    samples, skips = load_mpdocvqa(mpdocvqa, "test.json")
    assert samples == [] and skips == {"missing_answers": 1}
    samples, _ = load_mpdocvqa(mpdocvqa, mpdocvqa / "test.json", allow_missing_answers=True)
    assert (
        samples[0].split == "test" and samples[0].answers == [] and samples[0].meta["answer_page_idx"] is None
    )

    with pytest.raises(ValueError, match="not found.*nope.json"):
        load_mpdocvqa(mpdocvqa, "nope.json")
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json.*'data' list"):
        load_mpdocvqa(tmp_path, "bad.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        load_mpdocvqa(tmp_path, "broken.json")


# ---------------------------------------------------------------- SlidesVQA
@pytest.fixture()
def slidesvqa(tmp_path: Path) -> Path:
    root = tmp_path / "slidesvqa"
    for n in (1, 2, 10):  # slide_10 sorts before slide_2 by name; must come last
        page(root / "images" / "deck-a" / f"slide_{n}_1024.jpg", 10 * n)
    page(root / "images" / "deck-b" / "slide_1_1024.jpg", 200)
    (root / "images" / "deck-b" / "notes.txt").write_text("ignored")
    rows = [
        {
            "qa_id": 1,
            "deck_name": "deck-a",
            "question": "What year?",
            "answer": "2019",
            "evidence_pages": [10],
        },
        {"qa_id": 2, "deck_name": "deck-b", "question": "How many?", "answer": 3, "evidence_pages": [1]},
        {"qa_id": 3, "deck_name": "deck-missing", "question": "Q?", "answer": "x", "evidence_pages": [1]},
        {"qa_id": 4, "deck_name": "deck-a", "question": "Q?", "answer": "x", "evidence_pages": [7]},
        {"qa_id": 5, "deck_name": "../etc", "question": "Q?", "answer": "x", "evidence_pages": [1]},
        {"qa_id": 6, "deck_name": "deck-a", "question": "Q?", "answer": ["x"], "evidence_pages": [1]},
        {"qa_id": 7, "deck_name": "deck-a", "question": "Q?", "answer": "x", "evidence_pages": "1"},
        {"qa_id": 1, "deck_name": "deck-b", "question": "dup", "answer": "x", "evidence_pages": [1]},
        {"deck_name": "deck-a", "question": "no id", "answer": "x"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{this is not json")
    (root / "test.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return root


def test_slidesvqa_load(slidesvqa: Path) -> None:
    samples, skips = load_slidesvqa(slidesvqa, "test.jsonl")
    assert [s.sample_id for s in samples] == ["slidesvqa-1", "slidesvqa-2"]
    assert skips == {
        "malformed_item:json": 1,
        "missing_pages": 1,
        "missing_page": 1,
        "malformed_item:deck_name": 1,
        "malformed_item:answer": 1,
        "malformed_item:evidence_pages": 1,
        "duplicate_id": 1,
        "malformed_item:qa_id": 1,
    }
    a, b = samples
    assert (a.source, a.split, a.answers) == ("document", "test", ["2019"])
    assert b.answers == ["3"]  # numeric answers kept as text
    assert a.meta["pages"] == [f"images/deck-a/slide_{n}_1024.jpg" for n in (1, 2, 10)]
    assert a.video == a.meta["pages"][0]
    assert a.meta["evidence_pages"] == [10] and a.meta["evidence_page_idx"] == [2]

    vf = load_frames(page_paths(a, slidesvqa), num_frames=4, cache=None)
    assert [int(f.mean()) for f in vf.frames] == [10, 20, 100]


def test_slidesvqa_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_slidesvqa(tmp_path, "train.jsonl")
    (tmp_path / "train.jsonl").write_text("garbage\nmore garbage\n", encoding="utf-8")
    with pytest.raises(ValueError, match="train.jsonl.*no line is valid JSON"):
        load_slidesvqa(tmp_path, "train.jsonl")


# ---------------------------------------------------------------- page folder
def test_page_folder(tmp_path: Path) -> None:
    folder = tmp_path / "deck"
    for n in (1, 2, 10):
        page(folder / f"page{n}.png", 10 * n)
    (folder / "readme.md").write_text("not a page")
    s = load_page_folder(folder, " What is on page 10? ", ["x"])
    assert (s.source, s.question, s.answers, s.split) == ("document", "What is on page 10?", ["x"], "test")
    assert [Path(p).name for p in s.meta["pages"]] == ["page1.png", "page2.png", "page10.png"]
    vf = load_frames(page_paths(s), num_frames=8, cache=None)
    assert [int(f.mean()) for f in vf.frames] == [10, 20, 100]

    with pytest.raises(ValueError, match="not found"):
        load_page_folder(tmp_path / "nothing", "Q?", [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no page images"):
        load_page_folder(tmp_path / "empty", "Q?", [])


# ---------------------------------------------------------------- a page with more pixels than PIL decodes
def test_a_decompression_bomb_page_is_skipped_by_the_build_not_fatal(tmp_path: Path) -> None:
    """A 24 KB PNG of 20000x10000 (PIL refuses to decode it): its document is skipped and counted,
    as the first page (PIL raises on open) or hidden among the pages (the build reads every header)."""
    from collections import Counter

    from videor4.data.build import check_videos

    folders = {name: tmp_path / name for name in ("good", "bomb-first", "bomb-inside")}
    for name, folder in folders.items():
        for n, shade in enumerate((40, 90, 140), 1):
            page(folder / f"p{n}.png", shade)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(bomb)
    assert bomb.stat().st_size < 32_000
    shutil.copy(bomb, folders["bomb-first"] / "p1.png")
    shutil.copy(bomb, folders["bomb-inside"] / "p2.png")
    samples = [load_page_folder(f, "What is shown?", ["x"], sample_id=n) for n, f in folders.items()]
    skipped: Counter = Counter()
    kept, infos = check_videos(samples, 2, skipped)
    assert [s.sample_id for s in kept] == ["good"] and skipped == {"video_too_large": 2}
    assert list(infos) == [kept[0].video]
