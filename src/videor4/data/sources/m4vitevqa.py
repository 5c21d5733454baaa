"""M4-ViteVQA annotations → `Sample`s (users bring the dataset; nothing here downloads it).

Annotation files are `ViteVQA_0.0.2_{t1s1,t1s2,t2}{train,val,test}.json` (plus the Task 2
extra file), each `{"dataset_type", "dataset_name": "vtvqa", "dataset_version": "0.0.2",
"data": [item, ...]}` with items

    {"question", "question_id": int, "video_id": "01234", "answers": [str, ...],
     "video_width", "video_height", "source1": "Single frame" | "Multi frame",
     "source2": "Visual" | "Text" | "Knowledge"}

Videos are looked up under `<root>/<videos_dir>` as `<video_id><ext>`, as a folder of
frame images `<video_id>/`, or either of those nested one folder deeper.

A broken file (missing, not JSON, wrong top level) raises ValueError; a broken *item* is
skipped and counted so that one bad row never loses a whole split.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videor4.core.io import load_json_file, path_inside, relative_posix
from videor4.core.schema import Sample, SkipItem, TextBox
from videor4.data.ocr import load_ocr_file, ocr_to_text_boxes
from videor4.rumination.video import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

DATASET_NAME = "vtvqa"
TASKS = ("t1s1", "t1s2", "t2")
SPLITS = ("train", "val", "test")
# e.g. ViteVQA_0.0.2_t1s1train.json, ViteVQA_0.0.2_t2extra.json, ViteVQA_0.0.2_t2extratrain.json
_FILE_RE = re.compile(
    r"_(?P<task>t1s1|t1s2|t2)(?P<extra>extra)?(?P<split>train|val|test)?\.json$", re.IGNORECASE
)
_VIDEO_ID_RE = re.compile(r"^\d{5}$")
_LOGGED_PER_REASON = 5  # log the first few skips of each kind; the counts carry the rest


@dataclass
class M4ViteVQAConfig:
    root: Path
    split_file: str  # a file name under root (e.g. "ViteVQA_0.0.2_t1s1train.json") or a path
    videos_dir: str = "videos"  # relative to root
    ocr_dir: str | None = "video_ocr"  # relative to root; None: no OCR files
    video_ext: str = ".mp4"
    # Only needed when the annotation file was renamed and its name no longer says them.
    task: str | None = None
    split: str | None = None


class SkipCounter:
    """Counts skipped items by reason and logs the first few of each reason."""

    def __init__(self, source: Path, logger: logging.Logger = log):
        self.source = source
        self.log = logger  # the caller's logger, so messages name the loader that skipped
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= _LOGGED_PER_REASON:
            self.log.warning("%s: skipped (%s): %s", self.source, reason, message)

    def collect(
        self,
        items: Iterable[Any],
        parse: Callable[[Any], Sample],
        id_key: str,
        finish: Callable[[int, Sample], None] | None = None,
    ) -> list[Sample]:
        """Parse every item; SkipItem skips it (counted), a repeated sample id keeps the first.

        `finish(pos, sample)` runs after de-duplication (e.g. to resolve the video)
        and may raise SkipItem too.  `id_key` names the meta key quoted in messages.
        """
        samples: list[Sample] = []
        seen: set[str] = set()
        for pos, item in enumerate(items):
            try:
                sample = parse(item)
                if sample.sample_id in seen:
                    self.add(
                        "duplicate_id",
                        f"item {pos}: {id_key} {sample.meta.get(id_key)} seen before; keeping the first",
                    )
                    continue
                seen.add(sample.sample_id)
                if finish is not None:
                    finish(pos, sample)
            except SkipItem as exc:
                self.add(exc.reason, f"item {pos}: {exc}")
                continue
            samples.append(sample)
        return samples

    def summary(self) -> dict[str, int]:
        for reason, n in sorted(self.counts.items()):
            if n > _LOGGED_PER_REASON:
                self.log.warning(
                    "%s: %d items skipped for %s (first %d logged)",
                    self.source,
                    n,
                    reason,
                    _LOGGED_PER_REASON,
                )
        return dict(self.counts)


# ---------------------------------------------------------------- file-level helpers
def inside(root: Path, name: str, key: str) -> Path:
    """`root / name` for a name an annotation item gives (every source joins item names through
    here): one that would leave `root` (absolute, `..`) skips the item as malformed_item:<key>."""
    try:
        return path_inside(root, name)
    except ValueError as exc:
        raise SkipItem(f"malformed_item:{key}", str(exc)) from None


def _split_file_candidates(root: Path, split_file: str | Path) -> list[Path]:
    given = Path(split_file)
    return [given] if given.is_absolute() else [Path(root) / given, given]


def find_split_file(root: Path, split_file: str | Path) -> Path | None:
    """`split_file` under `root`, else as given (absolute, or relative to the cwd); None if neither
    is a file (for optional files, such as the val split's)."""
    return next((p for p in _split_file_candidates(root, split_file) if p.is_file()), None)


def resolve_split_file(root: Path, split_file: str | Path) -> Path:
    """`split_file` under `root`, else as given (absolute, or relative to the cwd)."""
    path = find_split_file(root, split_file)
    if path is None:
        looked = ", ".join(str(c) for c in _split_file_candidates(root, split_file))
        raise ValueError(f"annotation file not found: {split_file} (looked at {looked})")
    return path


def task_and_split(path: Path, task: str | None = None, split: str | None = None) -> tuple[str, str]:
    """Task tag (t1s1 / t1s2 / t2 / t2extra) and split (train / val / test) from the file name."""
    m = _FILE_RE.search(path.name)
    if m:
        tag = m["task"].lower() + ("extra" if m["extra"] else "")
        # The extra Task 2 file is additional training data.
        file_split = (m["split"] or ("train" if m["extra"] else "")).lower()
    else:
        tag, file_split = "", ""
    tag, file_split = task or tag, split or file_split
    if not tag or file_split not in SPLITS:
        raise ValueError(
            f"{path}: cannot tell the task/split from the file name (expected e.g. "
            f"ViteVQA_0.0.2_t1s1train.json); pass task= and split= in M4ViteVQAConfig"
        )
    return tag, file_split


def _read_annotations(path: Path) -> list[Any]:
    doc = load_json_file(path, "annotation file")
    if not isinstance(doc, dict):
        raise ValueError(
            f"{path}: top level must be a JSON object with a 'data' list, got {type(doc).__name__}"
        )
    if "data" not in doc:
        raise ValueError(f"{path}: top-level key 'data' is missing (keys: {sorted(doc)[:10]})")
    if not isinstance(doc["data"], list):
        raise ValueError(f"{path}: top-level 'data' must be a list, got {type(doc['data']).__name__}")
    name = doc.get("dataset_name")
    if name is not None and name != DATASET_NAME:
        # Tolerated: re-exported files sometimes rename the dataset; the items are what count.
        log.warning("%s: dataset_name is %r, expected %r", path, name, DATASET_NAME)
    return doc["data"]


# ---------------------------------------------------------------- video index
def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def index_videos(videos_dir: Path, video_ext: str = ".mp4") -> dict[str, Path]:
    """video_id → video file or frame folder, scanning `videos_dir` and one level below.

    Scanned once per load (not per item) because splits have thousands of items.
    Top-level entries win over nested ones, files over frame folders.
    """
    index: dict[str, Path] = {}
    if not videos_dir.is_dir():
        return index
    ext = video_ext.lower()

    def scan(folder: Path, depth: int) -> None:
        entries = sorted(folder.iterdir())
        subdirs = []
        for p in entries:
            if p.is_file() and p.suffix.lower() == ext:
                index.setdefault(p.stem, p)
        for p in entries:
            if not p.is_dir():
                continue
            if _VIDEO_ID_RE.match(p.name) and _has_images(p):
                index.setdefault(p.name, p)
            elif depth == 0:
                subdirs.append(p)
        for sub in subdirs:
            scan(sub, depth + 1)

    scan(videos_dir, 0)
    return index


# ---------------------------------------------------------------- items
def _snake(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


def _require(item: dict[str, Any], key: str) -> Any:
    if key not in item or item[key] is None:
        raise SkipItem(f"malformed_item:{key}", f"missing key {key!r}")
    return item[key]


def _positive_int(item: dict[str, Any], key: str) -> int:
    value = _require(item, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
        raise SkipItem(f"malformed_item:{key}", f"{key} must be a positive integer, got {value!r}")
    return int(value)


def _question_id(item: dict[str, Any]) -> int:
    value = _require(item, "question_id")
    if isinstance(value, str) and value.strip().isdigit():  # tolerate ids re-exported as strings
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SkipItem("malformed_item:question_id", f"question_id must be an int, got {value!r}")
    return value


def _answers(item: dict[str, Any], allow_missing: bool) -> list[str]:
    value = item.get("answers")
    if value is None or value == []:
        if allow_missing:
            return []
        raise SkipItem(
            "missing_answers", "no answers (test split? pass allow_missing_answers=True to predict)"
        )
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise SkipItem("malformed_item:answers", f"answers must be a list of strings, got {value!r:.80}")
    answers = [a.strip() for a in value]
    if not all(answers):
        raise SkipItem("malformed_item:answers", f"empty answer string in {value!r:.80}")
    return answers


def _source_field(item: dict[str, Any], key: str) -> str:
    value = _require(item, key)
    if not isinstance(value, str) or not value.strip():
        raise SkipItem(f"malformed_item:{key}", f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def parse_item(item: Any, tag: str, split: str, allow_missing_answers: bool = False) -> tuple[Sample, str]:
    """One annotation item → (Sample with `video` unset, video_id). Raises SkipItem."""
    if not isinstance(item, dict):
        raise SkipItem("malformed_item:type", f"item must be an object, got {type(item).__name__}")
    question = _require(item, "question")
    if not isinstance(question, str) or not question.strip():
        raise SkipItem(
            "malformed_item:question", f"question must be a non-empty string, got {question!r:.80}"
        )
    qid = _question_id(item)
    video_id = _require(item, "video_id")
    if not isinstance(video_id, str) or not _VIDEO_ID_RE.match(video_id):
        raise SkipItem("malformed_item:video_id", f"video_id must be a 5-digit string, got {video_id!r}")
    answers = _answers(item, allow_missing_answers)
    width = _positive_int(item, "video_width")
    height = _positive_int(item, "video_height")
    source1 = _source_field(item, "source1")
    source2 = _source_field(item, "source2")
    task = tag.removesuffix("extra")
    meta: dict[str, Any] = {
        "video_id": video_id,
        "question_id": qid,
        "video_width": width,
        "video_height": height,
        "source1": source1,
        "source2": source2,
        "task": task,
    }
    if tag != task:
        meta["subset"] = "extra"
    sample = Sample(
        sample_id=f"m4-{tag}-{qid}",
        video="",
        question=question.strip(),
        answers=answers,
        problem_type="open",
        question_kind=f"{_snake(source1)}_{_snake(source2)}",  # e.g. single_frame_text
        source="m4vitevqa",
        split=split,
        meta=meta,
    )
    return sample, video_id


def load_m4vitevqa(
    cfg: M4ViteVQAConfig, check_videos: bool = True, allow_missing_answers: bool = False
) -> tuple[list[Sample], dict[str, int]]:
    """Samples of one annotation file, and how many items were skipped for each reason.

    Raises ValueError (naming the file) if the file is missing, unreadable or not the
    expected top-level structure. With `check_videos`, items whose video is not found
    are skipped as "missing_video"; without it they get the default `<id><ext>` path.
    """
    root = Path(cfg.root)
    path = resolve_split_file(root, cfg.split_file)
    tag, split = task_and_split(path, cfg.task, cfg.split)
    items = _read_annotations(path)
    videos_dir = root / cfg.videos_dir
    if check_videos and not videos_dir.is_dir():
        log.warning("%s: videos folder %s does not exist; every item will be skipped", path, videos_dir)
    videos = index_videos(videos_dir, cfg.video_ext)

    skips = SkipCounter(path)

    def resolve_video(pos: int, sample: Sample) -> None:
        video_id = sample.meta["video_id"]
        video = videos.get(video_id)
        if video is None:
            if check_videos:
                raise SkipItem("missing_video", f"no video {video_id} under {videos_dir}")
            video = videos_dir / f"{video_id}{cfg.video_ext}"
        sample.video = relative_posix(video, root)

    samples = skips.collect(
        items,
        lambda item: parse_item(item, tag, split, allow_missing_answers)[0],
        "question_id",
        resolve_video,
    )
    counts = skips.summary()
    log.info("%s: %d samples, %d skipped", path, len(samples), sum(counts.values()))
    return samples, counts


# ---------------------------------------------------------------- OCR
def load_video_ocr(cfg: M4ViteVQAConfig, video_id: str, width: int, height: int) -> list[TextBox] | None:
    """OCR tokens of one video from `<root>/<ocr_dir>/<video_id>.json`, or None if absent.

    The file maps frame index → [{"ocr": text, "points": [8 pixel quad coords]}, ...];
    boxes come back normalized to [0, 1] with role "ocr". Malformed content raises
    ValueError naming the file.
    """
    if cfg.ocr_dir is None:
        return None
    path = path_inside(Path(cfg.root) / cfg.ocr_dir, f"{video_id}.json")
    if not path.is_file():
        return None
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: need a positive video size to normalize OCR boxes, got {width}x{height}")
    return ocr_to_text_boxes(load_ocr_file(path), width, height)
