"""Multiple-choice video QA (MVBench / Video-MME / Video-MMMU style) as `Sample`s.

One loader for the common shapes these benchmarks are exported in: a JSON list, a
`{"data": [...]}` object, or JSON lines, whose items carry

- the video: `video` | `video_path` | `videoID` | `video_id` (a file under `videos_dir`;
  without an extension, `video_ext` is added);
- `question`;
- the options: `options` | `candidates`, a list of texts (a leading "A." / "(A)" label is
  dropped; the options are lettered A, B, ... in order);
- `answer`: a letter ("B", "(B)") or the text of the correct option (MVBench);
- an id: `question_id` | `qid` | `id` (else the item's position).

Broken files raise ValueError naming the file; broken items are skipped and counted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from videor4.core.io import JSONLineError, read_json_or_lines
from videor4.core.schema import OPTION_LETTERS, Sample, SkipItem
from videor4.data.sources.m4vitevqa import SkipCounter, inside, resolve_split_file

log = logging.getLogger(__name__)

SOURCE = "mcvqa"
_VIDEO_KEYS = ("video", "video_path", "videoID", "video_id")
_OPTION_KEYS = ("options", "candidates")
_ID_KEYS = ("question_id", "qid", "id")
_LABEL = re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]\s+")


def _read_items(path: Path) -> list[Any]:
    if not path.is_file():
        raise ValueError(f"multiple-choice annotation file not found: {path}")
    try:  # JSON lines are streamed; one document is read whole
        whole, doc, _ = read_json_or_lines(path, what="annotation file")
    except JSONLineError as exc:
        neither = f"line {exc.lineno} is neither a JSON document nor JSON lines ({exc.msg})"
        raise ValueError(f"{path}: {neither}") from exc
    if not whole:
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return doc["data"]
    if isinstance(doc, list):
        return doc
    raise ValueError(f"{path}: expected a JSON list, an object with a 'data' list, or JSON lines")


def _first(item: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((item[k] for k in keys if item.get(k) not in (None, "")), None)


def _answer_letter(answer: Any, options: list[str]) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise SkipItem("malformed_item:answer", f"answer must be a non-empty string, got {answer!r:.60}")
    text = answer.strip()
    letters = OPTION_LETTERS[: len(options)]
    bare = re.fullmatch(r"[\(\[]?([A-Za-z])[\)\].:]?", text)
    if bare and bare.group(1).upper() in letters:
        return bare.group(1).upper()
    labelled = _LABEL.match(text)
    if labelled and labelled.group(1) in letters:
        return labelled.group(1)
    for letter, option in zip(letters, options):
        if option.strip().lower() == text.lower():
            return letter
    raise SkipItem(
        "malformed_item:answer", f"answer {text!r:.60} is neither an option letter nor an option's text"
    )


def parse_item(item: Any, pos: int, dataset: str, split: str) -> tuple[Sample, str]:
    """One item → (Sample with `video` unset, the video name). Raises SkipItem."""
    if not isinstance(item, dict):
        raise SkipItem("malformed_item:type", f"item must be an object, got {type(item).__name__}")
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise SkipItem(
            "malformed_item:question", f"question must be a non-empty string, got {question!r:.60}"
        )
    video = _first(item, _VIDEO_KEYS)
    if not isinstance(video, (str, int)):
        raise SkipItem("malformed_item:video", f"no video ({' / '.join(_VIDEO_KEYS)})")
    options = _first(item, _OPTION_KEYS)
    if (
        not isinstance(options, list)
        or not 2 <= len(options) <= len(OPTION_LETTERS)
        or not all(isinstance(o, str) for o in options)
    ):
        raise SkipItem(
            "malformed_item:options", f"options must be 2..{len(OPTION_LETTERS)} strings, got {options!r:.80}"
        )
    options = [_LABEL.sub("", o, count=1).strip() for o in options]
    letter = _answer_letter(item.get("answer"), options)
    qid = str(_first(item, _ID_KEYS) if _first(item, _ID_KEYS) is not None else pos)
    sample = Sample(
        sample_id=f"{dataset}-{qid}",
        video="",
        question=question.strip(),
        answers=[letter],
        problem_type="multiple_choice",
        options=options,
        question_kind="multiple_choice",
        source=SOURCE,
        split=split,
        meta={"dataset": dataset, "question_id": qid},
    )
    return sample, str(video)


def load_mcvqa(
    root: str | Path,
    annotation_file: str | Path,
    *,
    dataset: str = "mcvqa",
    videos_dir: str = "videos",
    video_ext: str = ".mp4",
    split: str = "test",
) -> tuple[list[Sample], dict[str, int]]:
    """The questions of one annotation file (videos resolved to paths from the working
    directory) and how many items were skipped for each reason."""
    root = Path(root)
    path = resolve_split_file(root, annotation_file)
    items = _read_items(path)
    videos = root / videos_dir
    skips = SkipCounter(path, log)
    names: dict[str, str] = {}

    def parse(pos_item: tuple[int, Any]) -> Sample:
        sample, name = parse_item(pos_item[1], pos_item[0], dataset, split)
        names[sample.sample_id] = name
        return sample

    def resolve(pos: int, sample: Sample) -> None:
        name = names[sample.sample_id]
        video = inside(videos, name, "video")
        if not video.suffix and not video.is_dir():
            video = video.with_name(video.name + video_ext)
        if not video.exists():
            raise SkipItem("missing_video", f"no video {name} under {videos}")
        sample.video = str(video)

    samples = skips.collect(enumerate(items), parse, "question_id", resolve)
    counts = skips.summary()
    log.info("%s: %d samples, %d skipped", path, len(samples), sum(counts.values()))
    return samples, counts
