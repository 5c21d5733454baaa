"""Multi-page documents and slide decks as `Sample`s whose pages are the frames of a "video".

The clip/crop tools then work unchanged: `videor4.rumination.video.load_frames(page_paths(sample, root))`
reads the pages in order.  Because a page folder's file names rarely sort correctly
(`slide_10` before `slide_2`), the ordered page list is kept in `meta["pages"]` (paths
relative to the dataset root) and `Sample.video` is only the first page; use
`page_paths` rather than `Sample.video` to get the frames.

Sources:
- MP-DocVQA: `{"data": [{"questionId", "question", "doc_id", "page_ids", "answers",
  "answer_page_idx"}, ...]}` with pages at `<root>/images/<page_id>.jpg` (or .png).
- SlidesVQA: JSON lines `{"qa_id", "deck_name", "question", "answer", "evidence_pages"}`
  with pages at `<root>/images/<deck_name>/slide_<n>_1024.jpg` (n 1-based).
- Any folder of page images (`load_page_folder`, for the CLI).

Broken files raise ValueError; broken items are skipped and counted by reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videor4.core.io import is_int, load_json_file, read_json_or_lines, relative_posix
from videor4.core.schema import Sample, SkipItem
from videor4.data.sources.m4vitevqa import SkipCounter, inside, resolve_split_file
from videor4.rumination.video import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

SOURCE = "document"
SPLITS = ("train", "val", "test")
# Preferred when one page exists in several formats.
_PAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SLIDE_RE = re.compile(r"^slide_(\d+)(?:_\d+)?\.(?:jpg|jpeg|png)$", re.IGNORECASE)


# ---------------------------------------------------------------- shared helpers
def page_paths(sample: Sample, root: str | Path = ".") -> list[Path]:
    """The ordered page images of a document sample, ready for `load_frames`."""
    pages = sample.meta.get("pages") or [sample.video]
    return [Path(root) / p for p in pages]


def _natural_key(path: Path) -> list[Any]:
    # "page2" before "page10"
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _split_from(path: Path, declared: Any, override: str | None) -> str:
    if override:
        return override
    if isinstance(declared, str) and declared.lower() in SPLITS:
        return declared.lower()
    for token in re.split(r"[^a-z]+", path.stem.lower()):
        if token in SPLITS:
            return token
    log.info("%s: split not given or in the file name; using 'test'", path)
    return "test"


def _int_id(item: dict[str, Any], key: str) -> int:
    value = item.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SkipItem(f"malformed_item:{key}", f"{key} must be an int, got {value!r}")
    return value


def _question(item: dict[str, Any]) -> str:
    value = item.get("question")
    if not isinstance(value, str) or not value.strip():
        raise SkipItem("malformed_item:question", f"question must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _answer_text(value: Any) -> str | None:
    """Answers are strings; numeric answers (SlidesVQA arithmetic) are kept as text."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


# ---------------------------------------------------------------- MP-DocVQA
def _index_images(folder: Path, key: Callable[[Path], Any]) -> dict[Any, Path]:
    """key(path) → image for the images in one folder, listed once; when two files
    share a key the preferred suffix (_PAGE_SUFFIXES order) wins; key None skips a file."""
    index: dict[Any, Path] = {}
    if not folder.is_dir():
        return index
    rank = {s: i for i, s in enumerate(_PAGE_SUFFIXES)}
    for p in folder.iterdir():
        suffix = p.suffix.lower()
        if suffix not in rank or not p.is_file():
            continue
        k = key(p)
        if k is None:
            continue
        old = index.get(k)
        if old is None or rank[suffix] < rank[old.suffix.lower()]:
            index[k] = p
    return index


def _index_pages(images_dir: Path) -> dict[str, Path]:
    """page_id → image (the folder holds tens of thousands of pages)."""
    return _index_images(images_dir, lambda p: p.stem)


def _mpdocvqa_answers(raw_answers: Any, allow_missing_answers: bool) -> list[str]:
    """An item's `answers`: a list of strings, or none at all where that is allowed (a test split)."""
    if raw_answers is None or raw_answers == []:
        if not allow_missing_answers:
            raise SkipItem("missing_answers", "no answers (test split? pass allow_missing_answers=True)")
        return []
    texts = [_answer_text(a) for a in raw_answers] if isinstance(raw_answers, list) else [None]
    if any(t is None for t in texts):
        raise SkipItem(
            "malformed_item:answers", f"answers must be a list of strings, got {raw_answers!r:.80}"
        )
    return [t for t in texts if t is not None]


def _slidesvqa_answers(raw_answer: Any, allow_missing_answers: bool) -> list[str]:
    """An item's `answer`: one non-empty string, or none where that is allowed."""
    if raw_answer is None:
        if not allow_missing_answers:
            raise SkipItem("missing_answers", "no answer (pass allow_missing_answers=True to predict)")
        return []
    answer = _answer_text(raw_answer)
    if answer is None:
        raise SkipItem("malformed_item:answer", f"answer must be a non-empty string, got {raw_answer!r:.80}")
    return [answer]


def _parse_mpdocvqa_item(
    item: Any, pages_index: dict[str, Path], root: Path, split: str, allow_missing_answers: bool
) -> Sample:
    if not isinstance(item, dict):
        raise SkipItem("malformed_item:type", f"item must be an object, got {type(item).__name__}")
    qid = _int_id(item, "questionId")
    question = _question(item)
    doc_id = item.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        raise SkipItem("malformed_item:doc_id", f"doc_id must be a string, got {doc_id!r}")
    page_ids = item.get("page_ids")
    if not isinstance(page_ids, list) or not page_ids or not all(isinstance(p, str) and p for p in page_ids):
        raise SkipItem(
            "malformed_item:page_ids", f"page_ids must be a non-empty list of strings, got {page_ids!r:.80}"
        )

    answers = _mpdocvqa_answers(item.get("answers"), allow_missing_answers)
    answer_page = item.get("answer_page_idx")
    if answer_page is not None and (
        isinstance(answer_page, bool)
        or not isinstance(answer_page, int)
        or not 0 <= answer_page < len(page_ids)
    ):
        raise SkipItem(
            "malformed_item:answer_page_idx",
            f"answer_page_idx must be an index into {len(page_ids)} pages, got {answer_page!r}",
        )

    missing = [p for p in page_ids if p not in pages_index]
    if missing:
        raise SkipItem(
            "missing_page", f"page image {missing[0]} not found ({len(missing)} of {len(page_ids)} missing)"
        )
    pages = [relative_posix(pages_index[p], root) for p in page_ids]
    return Sample(
        sample_id=f"mpdocvqa-{qid}",
        video=pages[0],
        question=question,
        answers=answers,
        problem_type="open",
        question_kind="document",
        source=SOURCE,
        split=split,
        meta={
            "dataset": "mpdocvqa",
            "question_id": qid,
            "doc_id": str(doc_id),
            "page_ids": list(page_ids),
            "pages": pages,
            "answer_page_idx": answer_page,
        },
    )


def load_mpdocvqa(
    root: str | Path,
    split_file: str | Path,
    *,
    split: str | None = None,
    allow_missing_answers: bool = False,
) -> tuple[list[Sample], dict[str, int]]:
    """MP-DocVQA questions (one per sample, pages in document order) and skip counts.

    `split_file` is a name under `root` or a path. Page boxes are unknown, so `evidence`
    stays empty; `meta["answer_page_idx"]` says which page holds the answer (None if absent).
    """
    root = Path(root)
    path = resolve_split_file(root, split_file)
    doc = load_json_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        got = type(doc).__name__ if not isinstance(doc, dict) else f"keys {sorted(doc)[:10]}"
        raise ValueError(f"{path}: expected a JSON object with a 'data' list, got {got}")
    split = _split_from(path, doc.get("dataset_split"), split)
    pages_index = _index_pages(root / "images")
    if not pages_index:
        log.warning("%s: no page images under %s; every item will be skipped", path, root / "images")

    skips = SkipCounter(path, log)
    samples = skips.collect(
        doc["data"],
        lambda item: _parse_mpdocvqa_item(item, pages_index, root, split, allow_missing_answers),
        "question_id",
    )
    counts = skips.summary()
    log.info("%s: %d samples, %d skipped", path, len(samples), sum(counts.values()))
    return samples, counts


# ---------------------------------------------------------------- SlidesVQA
def _deck_slides(deck_dir: Path) -> dict[int, Path]:
    """slide number → image for one deck folder (empty if the folder is missing)."""

    def number(p: Path) -> int | None:
        m = _SLIDE_RE.match(p.name)
        return int(m.group(1)) if m else None

    return _index_images(deck_dir, number)


def _read_jsonl_items(path: Path) -> tuple[list[Any], list[int]]:
    """Items of a JSON-lines file and the line numbers of lines that are not JSON.

    A whole-file JSON list (or {"data": [...]}) is accepted too, since some copies of
    SlidesVQA are re-saved that way.
    """
    whole, items, bad_lines = read_json_or_lines(path, strict=False)  # JSON lines are streamed
    if whole and isinstance(items, list):
        return items, []
    if whole and isinstance(items, dict):
        return (items["data"], []) if isinstance(items.get("data"), list) else ([items], [])
    if whole:  # a bare value: one item
        return [items], []
    if not items and bad_lines:
        raise ValueError(f"{path}: no line is valid JSON (expected JSON lines of SlidesVQA questions)")
    return items, bad_lines


def _parse_slidesvqa_item(
    item: Any,
    decks: dict[str, dict[int, Path]],
    images_dir: Path,
    root: Path,
    split: str,
    allow_missing_answers: bool,
) -> Sample:
    if not isinstance(item, dict):
        raise SkipItem("malformed_item:type", f"item must be an object, got {type(item).__name__}")
    qa_id = _int_id(item, "qa_id")
    question = _question(item)
    deck = item.get("deck_name")
    if not isinstance(deck, str) or not deck.strip():
        raise SkipItem("malformed_item:deck_name", f"deck_name must be a folder name, got {deck!r}")
    deck_dir = inside(images_dir, deck, "deck_name")  # the name becomes a folder: it must stay in images/

    answers = _slidesvqa_answers(item.get("answer"), allow_missing_answers)
    evidence_pages = item.get("evidence_pages") or []
    if not isinstance(evidence_pages, list) or not all(is_int(n) and n >= 1 for n in evidence_pages):
        raise SkipItem(
            "malformed_item:evidence_pages",
            f"evidence_pages must be 1-based ints, got {evidence_pages!r:.80}",
        )

    if deck not in decks:
        decks[deck] = _deck_slides(deck_dir)
    slides = decks[deck]
    if not slides:
        raise SkipItem("missing_pages", f"no slide images under {deck_dir}")
    numbers = sorted(slides)
    absent = [n for n in evidence_pages if n not in slides]
    if absent:
        raise SkipItem("missing_page", f"evidence slide {absent[0]} of deck {deck} not found")
    return Sample(
        sample_id=f"slidesvqa-{qa_id}",
        video=relative_posix(slides[numbers[0]], root),
        question=question,
        answers=answers,
        problem_type="open",
        question_kind="slides",
        source=SOURCE,
        split=split,
        meta={
            "dataset": "slidesvqa",
            "qa_id": qa_id,
            "deck_name": deck,
            "pages": [relative_posix(slides[n], root) for n in numbers],
            "slide_numbers": numbers,
            "evidence_pages": list(evidence_pages),  # slide numbers, 1-based
            "evidence_page_idx": [numbers.index(n) for n in evidence_pages],  # 0-based into pages
        },
    )


def load_slidesvqa(
    root: str | Path,
    split_file: str | Path,
    *,
    split: str | None = None,
    allow_missing_answers: bool = False,
) -> tuple[list[Sample], dict[str, int]]:
    """SlidesVQA questions (pages = the deck's slides sorted by number) and skip counts."""
    root = Path(root)
    path = resolve_split_file(root, split_file)
    items, bad_lines = _read_jsonl_items(path)
    split = _split_from(path, None, split)
    images_dir = root / "images"

    skips = SkipCounter(path, log)
    for lineno in bad_lines:
        skips.add("malformed_item:json", f"line {lineno} is not valid JSON")
    decks: dict[str, dict[int, Path]] = {}  # each deck folder is listed once
    samples = skips.collect(
        items,
        lambda item: _parse_slidesvqa_item(item, decks, images_dir, root, split, allow_missing_answers),
        "qa_id",
    )
    counts = skips.summary()
    log.info("%s: %d samples, %d skipped", path, len(samples), sum(counts.values()))
    return samples, counts


# ---------------------------------------------------------------- any page folder
def load_page_folder(
    folder: str | Path, question: str, answers: list[str] | None = None, sample_id: str | None = None
) -> Sample:
    """One question about a folder of page images (ordered naturally: page2 before page10).

    Paths are kept as given (absolute stays absolute), so `page_paths(sample)` with the
    default root finds them. Raises ValueError if the folder has no page images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"page folder not found: {folder}")
    pages = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
    )
    if not pages:
        raise ValueError(f"{folder}: no page images ({', '.join(IMAGE_SUFFIXES)})")
    if not question.strip():
        raise ValueError("question is empty")
    return Sample(
        sample_id=sample_id or f"pages-{folder.resolve().name}",
        video=pages[0].as_posix(),
        question=question.strip(),
        answers=[a.strip() for a in answers or []],
        problem_type="open",
        question_kind="document",
        source=SOURCE,
        split="test",
        meta={"dataset": "page_folder", "pages": [p.as_posix() for p in pages]},
    )
