"""Build the training and evaluation datasets from a source of videos + questions.

    samples ─▶ usable videos ─▶ OCR (cached) ─▶ evidence ─▶ DRP/CRP trajectories + QC
                                                        └─▶ RL_d / RL_c samples, val and test splits

Only the train split feeds evidence, trajectories and the RL sets; the val split (what in-training
scores and choices use) and the test split (scored by the eval stage alone) are written as they are.

Everything is written into a temporary folder and swapped into place at the
end, so a killed build leaves the previous output intact.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videor4.core.io import atomic_dir, files_md5, read_jsonl, write_jsonl
from videor4.core.params import ParamsError, fill, section
from videor4.core.schema import Evidence, Sample, TextBox, VideoRecord
from videor4.core.scoring import normalize_answer
from videor4.data.detection import (
    DetectionCache,
    ZeroShotDetector,
    best_detection,
    build_tiny_detector,
    detect_cached,
    detection_gt_agreement,
    noun_phrases,
)
from videor4.data.evidence import crop_covers, match_evidence, ocr_gt_agreement
from videor4.data.ocr import ocr_to_text_boxes, ocr_video
from videor4.data.review import REVIEWED_SETS, apply_decisions, load_decisions
from videor4.data.sources.m4vitevqa import M4ViteVQAConfig, find_split_file, load_m4vitevqa, load_video_ocr
from videor4.data.synthesis import (
    CRP_CROP_TARGETS,
    CRP_VARIANTS,
    SampleContext,
    SynthesisConfig,
    SynthesisResult,
    remove_images,
    synthesize,
)
from videor4.data.synthetic import generate_dataset
from videor4.data.writer import ThoughtWriter, WriterConfig, rewrite_thoughts
from videor4.rumination.tools import VisionConfig, vision_config
from videor4.rumination.video import (
    FRAME_CACHE,
    READ_ERRORS,
    FrameSource,
    VideoError,
    load_frames,
    page_size,
    uniform_indices,
)

if TYPE_CHECKING:
    from videor4.data.detection import Detection
    from videor4.data.synthetic import SyntheticConfig
    from videor4.rumination.trajectory import Trajectory

log = logging.getLogger(__name__)

DATASETS = ("samples_train", "samples_val", "samples_test", "sft_drp", "sft_crp", "rl_d", "rl_c")
HELD_OUT_SPLITS = ("val", "test")  # split name -> samples_<split>; written with their shown frames
TOKENIZER_CORPUS = (
    "tokenizer_corpus"  # data/built/tokenizer_corpus.jsonl: what base_model trains its tokenizer on
)
MULTI_EVIDENCE_KINDS = ("compare", "count")
DETECTION_CACHE = ".cache/detection"  # detections by frame content, and the tiny detector's folder
# data.m4vitevqa's annotation file keys and the split each one's samples go to
M4_SPLIT_FILES = (("train_file", "train"), ("val_file", "val"), ("test_file", "test"))


@dataclass(frozen=True)
class VideoLimits:
    """The most one video (or page folder) may hold; more is skipped as video_too_large, since
    decoding it would take the machine's memory or hours (a 24 KB PNG can declare 200 megapixels)."""

    max_pixels: int = 50_000_000  # per frame or page: data.max_video_pixels
    max_frames: int = 100_000  # data.max_frames
    max_bytes: int = 8 << 30  # the file, or its pages together: data.max_video_bytes

    def check(self, src: FrameSource) -> None:
        """Raise VideoError("too_large") for a source over a limit (page sizes are read from headers)."""
        files = src.pages if src.pages is not None else [src.path]
        size = sum(p.stat().st_size for p in files)
        if size > self.max_bytes:
            over = f"{size} bytes, over data.max_video_bytes={self.max_bytes}"
            raise VideoError("too_large", f"{src.path}: {over}")
        if src.num_frames > self.max_frames:
            over = f"{src.num_frames} frames, over data.max_frames={self.max_frames}"
            raise VideoError("too_large", f"{src.path}: {over}")
        for page in src.pages or [None]:
            width, height = (src.width, src.height) if page is None else page_size(page)
            if width * height > self.max_pixels:
                over = f"{width}x{height}, over data.max_video_pixels={self.max_pixels}"
                raise VideoError("too_large", f"{page or src.path}: {over}")


@dataclass
class BuildConfig:
    out_dir: Path = Path("data/built")
    ocr_max_videos: int = 4  # OCR this many training videos (all shown frames); -1 = every video
    ocr_min_anls: float = 0.5
    ocr_cache_dir: Path | None = Path(".cache/ocr")
    n_rl_d: int = 200
    n_rl_c: int = 200
    max_bad_fraction: float = 0.5  # fail when more than this fraction of videos cannot be used
    seed: int = 0
    evidence_frame: str = "random"  # first | random: which frame showing a text its trajectories read it from
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    review_decisions: Path | None = (
        None  # a reviewer's accept/reject file (`video-r4 data review`); None: no human QC
    )
    cot: WriterConfig = field(
        default_factory=WriterConfig
    )  # the model writer's settings, when build_datasets gets one
    detection: DetectionParams | None = None  # a zero-shot detector for what OCR cannot find; None: off
    limits: VideoLimits = field(default_factory=VideoLimits)
    tokenizer_corpus: tuple[int, int] = (300, 300)  # DRP, CRP trajectories of the build the tokenizer reads


@dataclass
class SourceData:
    """What a data source hands to the build: samples plus what is known about each video."""

    samples: list[Sample]
    gt_text_boxes: dict[str, list[TextBox]] = field(default_factory=dict)  # video path -> every GT text
    ocr_boxes: dict[str, list[TextBox]] = field(default_factory=dict)  # video path -> OCR the user supplied
    skipped: Counter = field(default_factory=Counter)


class BuildError(RuntimeError):
    pass


def validate_dataset(rows: list[dict[str, Any]], dataset: str, allow_empty: bool = False) -> None:
    """Check one built dataset with its GX suite (every sample split shares `samples`);
    raises validation.DataValidationError.  Empty val and test splits are allowed."""
    from videor4.data.validation import require_valid  # Great Expectations and pandas: seconds to import

    suite = "samples" if dataset.startswith("samples_") else dataset
    held_out = dataset in {f"samples_{split}" for split in HELD_OUT_SPLITS}
    require_valid(rows, suite, allow_empty=allow_empty or held_out)


def load_synthetic_source(root: Path) -> SourceData:
    """The procedural videos written by `synthetic.generate_dataset` (+ manifest and samples)."""
    records = [VideoRecord.from_dict(r) for r in read_jsonl(root / "manifest.jsonl")]
    samples = [Sample.from_dict(r) for r in read_jsonl(root / "samples.jsonl")]
    return SourceData(samples=samples, gt_text_boxes={r.path: r.text_boxes for r in records})


def load_m4vitevqa_source(section: dict[str, Any]) -> SourceData:
    """M4-ViteVQA train, val and test annotation files, with the per-video OCR files where present.
    The val file is optional: without it under root the build has no val samples."""

    if not section.get("root"):
        raise BuildError("data.source is m4vitevqa but data.m4vitevqa.root is not set")
    root = Path(section["root"])
    samples: list[Sample] = []
    skipped: Counter = Counter()
    ocr_boxes: dict[str, list[TextBox]] = {}
    for key, split in M4_SPLIT_FILES:
        if not section.get(key):
            continue
        if split == "val" and find_split_file(root, section[key]) is None:
            log.info("data.m4vitevqa.val_file %s is not under %s: no val samples", section[key], root)
            continue
        cfg = M4ViteVQAConfig(
            root=root,
            split_file=section[key],
            videos_dir=section.get("videos_dir", "videos"),
            ocr_dir=section.get("ocr_dir"),
            split=split,
        )
        loaded, skips = load_m4vitevqa(cfg, check_videos=True, allow_missing_answers=(split == "test"))
        skipped.update(skips)
        for s in loaded:
            s.video = str(root / s.video)  # rows name paths from the working directory
            if split == "train" and s.video not in ocr_boxes and cfg.ocr_dir:
                boxes = load_video_ocr(
                    cfg, s.meta["video_id"], int(s.meta["video_width"]), int(s.meta["video_height"])
                )
                if boxes is not None:
                    ocr_boxes[s.video] = boxes
        samples += loaded
    return SourceData(samples=samples, ocr_boxes=ocr_boxes, skipped=skipped)


def make_synthetic_source(
    out_dir: Path, cfg: "SyntheticConfig", progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Generate the procedural videos into `out_dir` (atomically) with manifest.jsonl and samples.jsonl."""

    t0 = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        records, samples = generate_dataset(tmp, cfg, progress)
        for r in records:  # rows name paths from the working directory, like every dataset
            r.path = str(out_dir / r.path)
        for s in samples:
            s.video = str(out_dir / s.video)
        write_jsonl(tmp / "manifest.jsonl", (r.to_dict() for r in records))
        write_jsonl(tmp / "samples.jsonl", (s.to_dict() for s in samples))
    seconds = time.perf_counter() - t0
    return {
        "n_videos": len(records),
        "n_samples": len(samples),
        "question_kinds": dict(sorted(Counter(s.question_kind for s in samples).items())),
        "seconds": round(seconds, 2),
        "videos_per_second": round(len(records) / seconds, 3) if seconds else None,
    }


def _source_md5(source: str | list[str]) -> str:
    """Content hash of a video file (or of a document's pages): OCR results are cached under it."""
    return files_md5([source] if isinstance(source, str) else source)


def _video_id(video: str) -> str:
    return Path(video).stem


@dataclass
class _VideoInfo:
    source: str | list[str]  # what FrameSource decodes (a video path or page images)
    frame_indices: list[int]
    num_source_frames: int
    width: int
    height: int


def check_videos(
    samples: list[Sample], num_frames: int, skipped: Counter, limits: VideoLimits = VideoLimits()
) -> tuple[list[Sample], dict[str, _VideoInfo]]:
    """Drop samples whose video is missing, empty, undecodable or over a limit (counted by reason)."""
    infos: dict[str, _VideoInfo] = {}
    bad: dict[str, str] = {}
    sources = {s.video: s.frame_source() for s in samples}
    for video in sorted(sources):
        try:
            src = FRAME_CACHE.source(sources[video])  # the reader is reused by OCR and synthesis
            limits.check(src)
            idx = uniform_indices(src.num_frames, num_frames)
            FRAME_CACHE.get(src, idx[:1] + idx[-1:])  # decode the ends: catches truncated files
            infos[video] = _VideoInfo(sources[video], idx, src.num_frames, src.width, src.height)
        except READ_ERRORS as exc:  # a frame out of range is a FrameRangeError
            reason = getattr(exc, "reason", "unreadable")
            bad[video] = reason
            log.warning("skipping video: %s", exc)
    kept = []
    for s in samples:
        if s.video in bad:
            skipped[f"video_{bad[s.video]}"] += 1
        else:
            kept.append(s)
    return kept, infos


def run_ocr(
    videos: list[str],
    infos: dict[str, _VideoInfo],
    cache_dir: Path | None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[TextBox]]:
    """OCR every shown frame of the given videos (RapidOCR, cached by video content)."""

    out = {}
    for video in videos:
        info = infos[video]
        frames = load_frames(info.source, indices=info.frame_indices).frames
        cache = None if cache_dir is None else cache_dir / _source_md5(info.source)[:16]
        ocr = ocr_video(_video_id(video), frames, info.frame_indices, cache)
        out[video] = ocr_to_text_boxes(ocr, info.width, info.height)
        if progress:
            progress(1)
    return out


def evidence_groups(
    evidence: list[Evidence], rng: random.Random, frame_order: str = "random", question: str = ""
) -> list[list[Evidence]]:
    """One group per distinct text to read, in the order the question names what holds them (where
    the evidence says, else first seen), its frames in seeded random order, or earliest first
    (`frame_order` "first").

    Sources list a text on every shown frame where it is visible; a reader needs
    it once, from any of them.
    """

    groups: dict[str, list[Evidence]] = {}
    for e in evidence:
        groups.setdefault(normalize_answer(e.text), []).append(e)

    def mention(group: list[Evidence]) -> int:
        where = question.find(group[0].label) if group[0].label else -1
        return where if where != -1 else len(question)

    out = []
    for group in sorted(groups.values(), key=mention):  # stable: unnamed texts keep their order
        group = list(group)
        if frame_order == "first":
            group.sort(key=lambda e: e.frame)
        else:
            rng.shuffle(group)
        out.append(group)
    return out


# What a build asks a detector: the best box for `phrase` on these source frames, or None.
Detect = Callable[[str, list[int]], "Detection | None"]


def ground_evidence(
    sample: Sample,
    info: _VideoInfo,
    ocr_boxes: list[TextBox] | None,
    min_anls: float,
    rng: random.Random,
    frame_order: str = "random",
    detect: Detect | None = None,
) -> tuple[list[Evidence], list[Evidence], str]:
    """(evidence to read, boxes QC checks against, origin) for one sample.

    With OCR: each ground-truth text (or, when there is none, the answer) is
    matched to OCR tokens on the shown frames; the OCR reading is what a
    trajectory reads, the ground truth is what QC checks.  Where OCR finds no
    match and a detector is given, the thing the question names (the evidence's
    label, else the question's noun phrases) is detected instead: its box is where
    the text is read, the annotation says what it reads (origin `detection`).
    Without OCR the generator's (or annotation's) evidence is used as is.
    """

    groups = evidence_groups(sample.evidence, rng, frame_order, sample.question)
    if ocr_boxes is None:
        chosen = [g[0] for g in groups]
        return chosen, chosen, "ground_truth" if chosen else "none"
    phrases = noun_phrases(sample.question)
    if groups:
        found, qc, origin = [], [], "ocr"
        for group in groups:
            for gt in group:  # any frame showing the text will do
                hits = match_evidence([gt.text], ocr_boxes, frames={gt.frame}, min_anls=min_anls)
                if hits:
                    found.append(dataclasses.replace(hits[0], label=gt.label))
                    qc.append(gt)
                    break
            else:
                phrase = group[0].label or (phrases[0] if phrases else None)
                hit = detect(phrase, [g.frame for g in group]) if detect and phrase else None
                if hit is None:
                    return [], [g[0] for g in groups], "ocr_miss"
                gt = next(g for g in group if g.frame == hit.frame)
                found.append(Evidence(hit.frame, list(hit.bbox), gt.text, origin="detection", label=phrase))
                qc.append(gt)
                origin = "detection"
        return found, qc, origin
    targets = [sample.meta.get("answer_text")] if sample.problem_type == "multiple_choice" else sample.answers
    targets = [t for t in targets if t]
    hits = match_evidence(targets, ocr_boxes, frames=set(info.frame_indices), min_anls=min_anls)
    if hits:
        return hits[:1], hits[:1], "ocr"
    hit = detect(phrases[0], list(info.frame_indices)) if detect and phrases and targets else None
    if hit is None:
        return [], [], "ocr_miss"
    evidence = [Evidence(hit.frame, list(hit.bbox), targets[0], origin="detection", label=phrases[0])]
    return evidence, evidence, "detection"


def detector_for(params: DetectionParams, seed: int) -> Any:
    """The zero-shot detector `data.detection` names (`tiny`: a random tiny OWLv2 built locally from
    config, which exercises the code path but cannot see)."""

    path = params.model
    if path == "tiny":
        path = str(
            build_tiny_detector(
                Path(params.cache_dir or DETECTION_CACHE) / f"tiny-detector-{seed}", seed=seed
            )
        )
    return ZeroShotDetector(path, box_threshold=params.box_threshold, max_per_phrase=params.max_per_phrase)


def video_detector(detector: Any, cache_dir: str | None, info: _VideoInfo) -> Detect:
    """`Detect` on one video's shown frames (decoded once, detections cached by frame content)."""

    cache = DetectionCache(cache_dir or DETECTION_CACHE)
    frames: dict[int, Any] = {}

    def detect(phrase: str, source_frames: list[int]) -> Detection | None:
        if not frames:
            decoded = load_frames(info.source, indices=info.frame_indices).frames
            frames.update(zip(info.frame_indices, decoded))
        found = detect_cached(detector, cache, [frames[f] for f in source_frames], [phrase], source_frames)
        return best_detection(found, source_frames, phrase)

    return detect


def detection_agreement(
    contexts: list[SampleContext], detects: dict[str, Detect], margin: float
) -> dict[str, Any]:
    """How the detector's box for each ground-truth evidence's label compares with the generator's text box:
    IoU >= 0.5, and the share a crop of it (widened by the crop margin) covers >= 90 % of (what QC asks)."""

    pairs = []
    for ctx in contexts:
        if ctx.sample.video in detects:
            for gt in ctx.qc_boxes:
                if gt.label:
                    pairs.append((detects[ctx.sample.video](gt.label, [gt.frame]), gt.bbox))
    iou_rate, n = detection_gt_agreement(pairs)
    covered = sum(1 for det, gt in pairs if det is not None and crop_covers(det.bbox, gt, margin))
    return {
        "detection_gt_boxes": n,
        "detection_gt_iou50": round(iou_rate, 4),
        "detection_gt_cover": round(covered / n, 4) if n else None,
    }


def _frame_texts(boxes: list[TextBox]) -> dict[int, list[TextBox]]:
    by_frame: dict[int, list[TextBox]] = defaultdict(list)
    for b in boxes:
        by_frame[b.frame].append(b)
    return dict(by_frame)


def _rl_row(sample: Sample, info: _VideoInfo, evidence: list[Evidence], tool_mode: str) -> dict[str, Any]:
    row = sample.to_dict()
    row["evidence"] = [e.__dict__ for e in evidence]
    row.update(
        tool_mode=tool_mode, frame_indices=info.frame_indices, num_source_frames=info.num_source_frames
    )
    return row


def split_rl(
    contexts: list[SampleContext], n_rl_d: int, n_rl_c: int, seed: int
) -> tuple[list[SampleContext], list[SampleContext]]:
    """Disjoint RL sets: single-evidence questions alternate between RL_d and RL_c;
    questions that need several readings (compare, count) go to RL_c (mixed tools)."""
    order = list(contexts)
    random.Random(seed).shuffle(order)
    rl_d, rl_c = [], []
    for ctx in order:
        multi = ctx.sample.question_kind in MULTI_EVIDENCE_KINDS or len(ctx.evidence) > 1
        if not multi and len(rl_d) <= len(rl_c) and len(rl_d) < n_rl_d:
            rl_d.append(ctx)
        elif len(rl_c) < n_rl_c:
            rl_c.append(ctx)
        elif not multi and len(rl_d) < n_rl_d:
            rl_d.append(ctx)
    return rl_d, rl_c


def build_datasets(
    source: SourceData,
    cfg: BuildConfig,
    validate: Callable[[list[dict[str, Any]], str], None] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    writer: ThoughtWriter | None = None,
) -> dict[str, Any]:
    """Run the whole build; returns the metrics.  `validate(rows, dataset)` raises on invalid data.
    With a `writer`, a model writes the trajectories' thoughts (`videor4.data.writer`)."""
    t0 = time.perf_counter()
    decisions = (
        load_decisions(cfg.review_decisions) if cfg.review_decisions is not None else None
    )  # bad file: fail first
    skipped = Counter(source.skipped)
    samples, infos, n_bad = _usable_videos(source, cfg, skipped)
    train = [s for s in samples if s.split == "train"]
    held_out = {  # never grounded or synthesized: only train feeds trajectories and RL sets
        "val": [s for s in samples if s.split == "val"],
        "test": [s for s in samples if s.split not in ("train", "val")],
    }
    train_videos = sorted({s.video for s in train})
    ocr = _ocr_pass(source, train_videos, infos, cfg, progress)
    grounded = _ground_train(train, train_videos, infos, ocr.boxes, source, cfg)
    with atomic_dir(cfg.out_dir) as tmp:
        written = _write_datasets(tmp, cfg, grounded, held_out, infos, decisions, validate, progress, writer)
    reviewed, rewritten = decisions is not None, writer is not None
    return _build_metrics(t0, cfg, infos, n_bad, skipped, ocr, grounded, written, reviewed, rewritten)


@dataclass
class _OCRPass:
    """The build's OCR: boxes by video, which videos have them, and their agreement with the ground truth."""

    boxes: dict[str, list[TextBox]]  # the source's own OCR and what the build read
    videos: list[str]  # every video with OCR
    read: list[str]  # the videos the build read itself
    gt_hits: float = 0.0  # agreement rate x ground-truth boxes, summed over the videos that have them
    gt_boxes: int = 0


@dataclass
class _Grounding:
    """The training samples with evidence (synthesis contexts), and what happened to the others."""

    contexts: list[SampleContext]
    dropped: Counter  # samples (and later trajectories) dropped, by reason
    evidence_origin: Counter
    detects: dict[str, Detect]  # a detector per video, where one was asked for


@dataclass
class _Written:
    """What the build wrote, for its metrics."""

    trajectories: dict[str, list[Trajectory]]  # drp / crp, as kept after review
    rl_d: list[SampleContext]
    rl_c: list[SampleContext]
    n_val: int
    n_test: int
    review: Counter  # review_accepted / _rejected / _stale (empty without a review)
    thoughts: Counter  # the writer's thoughts kept or replaced, by reason (empty without a writer)


def _usable_videos(
    source: SourceData, cfg: BuildConfig, skipped: Counter
) -> tuple[list[Sample], dict[str, _VideoInfo], int]:
    """(samples whose video can be used, each such video's info, how many videos cannot be used);
    BuildError when there are no samples or too many bad videos."""
    n_videos_in = len({s.video for s in source.samples})
    samples, infos = check_videos(source.samples, cfg.vision.num_frames, skipped, cfg.limits)
    n_bad = n_videos_in - len(infos)
    if n_videos_in == 0:
        raise BuildError("the data source has no samples")
    if n_bad / n_videos_in > cfg.max_bad_fraction:
        raise BuildError(
            f"{n_bad} of {n_videos_in} videos cannot be used ({dict(skipped)}); "
            f"more than data.max_bad_fraction={cfg.max_bad_fraction}"
        )
    return samples, infos, n_bad


def _ocr_pass(
    source: SourceData,
    train_videos: list[str],
    infos: dict[str, _VideoInfo],
    cfg: BuildConfig,
    progress: Callable[[str, int], Callable[[int], None]] | None,
) -> _OCRPass:
    """OCR the first training videos (all of them with ocr_max_videos = -1) that the source has no OCR for."""

    n_ocr = len(train_videos) if cfg.ocr_max_videos < 0 else min(cfg.ocr_max_videos, len(train_videos))
    ocr_videos = sorted(set(train_videos[:n_ocr]) | (set(source.ocr_boxes) & set(infos)))
    to_read = [v for v in ocr_videos if v not in source.ocr_boxes]
    ocr = dict(source.ocr_boxes)
    ocr.update(
        run_ocr(to_read, infos, cfg.ocr_cache_dir, progress("OCR", len(to_read)) if progress else None)
    )

    found = _OCRPass(ocr, ocr_videos, to_read)
    for video, boxes in ocr.items():
        gt = source.gt_text_boxes.get(video)
        if gt:
            rate, n = ocr_gt_agreement(gt, boxes, set(infos[video].frame_indices))
            found.gt_hits += rate * n
            found.gt_boxes += n
    return found


def _train_detectors(
    cfg: BuildConfig, train_videos: list[str], infos: dict[str, _VideoInfo], ocr: dict[str, list[TextBox]]
) -> dict[str, Detect]:
    """A detector, where asked for, on the same videos as OCR: for what OCR cannot find."""
    if cfg.detection is None:
        return {}
    detector = detector_for(cfg.detection, cfg.seed)
    max_videos = cfg.detection.max_videos
    n_det = len(train_videos) if max_videos < 0 else min(max_videos, len(train_videos))
    cache_dir = cfg.detection.cache_dir
    return {v: video_detector(detector, cache_dir, infos[v]) for v in train_videos[:n_det] if v in ocr}


def _ground_train(
    train: list[Sample],
    train_videos: list[str],
    infos: dict[str, _VideoInfo],
    ocr: dict[str, list[TextBox]],
    source: SourceData,
    cfg: BuildConfig,
) -> _Grounding:
    """Evidence for each training sample (one seeded rng over them all, in order) and its synthesis
    context."""
    grounded = _Grounding([], Counter(), Counter(), {})
    rng = random.Random(cfg.seed)
    grounded.detects = _train_detectors(cfg, train_videos, infos, ocr)
    for s in train:
        info = infos[s.video]
        detect = grounded.detects.get(s.video)
        evidence, qc, origin = ground_evidence(
            s, info, ocr.get(s.video), cfg.ocr_min_anls, rng, cfg.evidence_frame, detect
        )
        grounded.evidence_origin[origin] += 1
        if not evidence:
            grounded.dropped["no_ocr_evidence" if origin == "ocr_miss" else "no_evidence"] += 1
            continue
        known = ocr.get(s.video) or source.gt_text_boxes.get(s.video, [])
        grounded.contexts.append(SampleContext(s, info.frame_indices, evidence, qc, _frame_texts(known)))
    return grounded


def _write_datasets(
    tmp: Path,
    cfg: BuildConfig,
    grounded: _Grounding,
    held_out: dict[str, list[Sample]],
    infos: dict[str, _VideoInfo],
    decisions: dict[str, Any] | None,
    validate: Callable[[list[dict[str, Any]], str], None] | None,
    progress: Callable[[str, int], Callable[[int], None]] | None,
    writer: ThoughtWriter | None,
) -> _Written:
    """Synthesize the trajectories (images under `tmp/images`) and write every dataset into `tmp`,
    the build's temporary folder; the rows name the final folder."""
    image_dir = tmp / "images"
    result, thoughts = _synthesize_trajectories(grounded, cfg, image_dir, progress, writer)
    rl_d, rl_c = split_rl(grounded.contexts, cfg.n_rl_d, cfg.n_rl_c, cfg.seed)
    rows = _dataset_rows(grounded.contexts, held_out, infos, result, rl_d, rl_c)
    n_val, n_test = len(rows["samples_val"]), len(rows["samples_test"])
    review = Counter()
    if decisions is not None:  # human QC: drop what a reviewer rejected, with its observation images
        review = _apply_review(rows, decisions, result, image_dir)
        grounded.dropped["review_rejected"] += review["review_rejected"]
    if validate is not None:  # before anything is swapped in: invalid data never replaces valid data
        for name in DATASETS:
            validate(rows[name], name)
        splits = rows["samples_train"] + rows["samples_val"] + rows["samples_test"]
        validate(splits, "splits")  # no video in two splits
    rows[TOKENIZER_CORPUS] = _tokenizer_corpus(rows, grounded, cfg, tmp, decisions, validate, writer)
    for traj in rows["sft_drp"] + rows["sft_crp"]:  # rows name the final folder, not the temporary one
        for step in traj["steps"]:
            obs = step["observation"]
            obs["images"] = [str(cfg.out_dir / Path(p).relative_to(tmp)) for p in obs["images"]]
    for name, data in rows.items():
        write_jsonl(tmp / f"{name}.jsonl", data)
    return _Written(result.trajectories, rl_d, rl_c, n_val, n_test, review, thoughts)


def _tokenizer_corpus(
    rows: dict[str, list[dict[str, Any]]],
    grounded: _Grounding,
    cfg: BuildConfig,
    tmp: Path,
    decisions: dict[str, Any] | None,
    validate: Callable[[list[dict[str, Any]], str], None] | None,
    writer: ThoughtWriter | None,
) -> list[dict[str, Any]]:
    """The trajectories the tiny model's tokenizer is trained on: the SFT sets of a build at the
    reference sizes (`data.tokenizer_corpus`), whatever `data.sizes` are, so that a data-size sweep
    leaves the tokenizer, the base model and pretraining as they are.  At the reference sizes they
    are this build's own SFT sets; at other sizes they are synthesized again (thoughts, review and
    validation as for the SFT sets).  Text only: without image paths the file has the same bytes
    either way, and base_model, which depends on it, stays up to date."""
    n_drp, n_crp = cfg.tokenizer_corpus
    if (cfg.synthesis.n_drp, cfg.synthesis.n_crp) == (n_drp, n_crp):
        return [_text_only(t) for t in rows["sft_drp"] + rows["sft_crp"]]
    reference = dataclasses.replace(
        cfg, synthesis=dataclasses.replace(cfg.synthesis, n_drp=n_drp, n_crp=n_crp)
    )
    scratch = _Grounding(
        grounded.contexts, Counter(), Counter(), grounded.detects
    )  # its drops are not the build's
    image_dir = tmp / "tokenizer_corpus_images"
    result, _ = _synthesize_trajectories(scratch, reference, image_dir, None, writer)
    corpus = {"sft_drp": [t.to_dict() for t in result.trajectories["drp"]]}
    corpus["sft_crp"] = [t.to_dict() for t in result.trajectories["crp"]]
    if decisions is not None:
        _apply_review(corpus, decisions, result, image_dir)
    for name, part in corpus.items():
        if validate is not None:
            validate(part, name)
    shutil.rmtree(image_dir, ignore_errors=True)
    return [_text_only(t) for t in corpus["sft_drp"] + corpus["sft_crp"]]


def _text_only(traj: dict[str, Any]) -> dict[str, Any]:
    """A trajectory row without its observation images' paths (their sha256s stay)."""
    steps = [{**step, "observation": {**step["observation"], "images": []}} for step in traj["steps"]]
    return {**traj, "steps": steps}


def _synthesize_trajectories(
    grounded: _Grounding,
    cfg: BuildConfig,
    image_dir: Path,
    progress: Callable[[str, int], Callable[[int], None]] | None,
    writer: ThoughtWriter | None,
) -> tuple[SynthesisResult, Counter]:
    """DRP and CRP trajectories (their drops counted into `grounded.dropped`), and with a `writer`
    their thoughts rewritten: (result, the writer's counts by reason)."""
    contexts = grounded.contexts
    n_candidates = min(cfg.synthesis.n_drp, 2 * len(contexts)) + min(cfg.synthesis.n_crp, 3 * len(contexts))
    tick = progress("synthesis", n_candidates) if progress else None
    result = synthesize(contexts, cfg.vision, cfg.synthesis, image_dir, tick)
    for reason, n in result.dropped.items():
        grounded.dropped[reason] += n
    thoughts: Counter = Counter()
    if writer is not None:  # the calls and answers stay the plan's; only the prose changes
        for name, trajs in result.trajectories.items():
            result.trajectories[name], counts = rewrite_thoughts(trajs, writer, cfg.cot)
            thoughts.update(counts)
    return result, thoughts


def _dataset_rows(
    contexts: list[SampleContext],
    held_out: dict[str, list[Sample]],
    infos: dict[str, _VideoInfo],
    result: SynthesisResult,
    rl_d: list[SampleContext],
    rl_c: list[SampleContext],
) -> dict[str, list[dict[str, Any]]]:
    """Every dataset's rows by name, in DATASETS order (the order they are written in)."""
    return {
        "samples_train": [c.sample.to_dict() for c in contexts],
        "samples_val": _held_out_rows(held_out["val"], infos),
        "samples_test": _held_out_rows(held_out["test"], infos),
        "sft_drp": [t.to_dict() for t in result.trajectories["drp"]],
        "sft_crp": [t.to_dict() for t in result.trajectories["crp"]],
        "rl_d": [_rl_row(c.sample, infos[c.sample.video], c.evidence, "single") for c in rl_d],
        "rl_c": [_rl_row(c.sample, infos[c.sample.video], c.evidence, "mixed") for c in rl_c],
    }


def _held_out_rows(samples: list[Sample], infos: dict[str, _VideoInfo]) -> list[dict[str, Any]]:
    """Val or test samples as written: with the frames the model is shown, for scoring them."""
    rows = []
    for s in samples:
        row = s.to_dict()
        info = infos[s.video]
        row.update(frame_indices=info.frame_indices, num_source_frames=info.num_source_frames)
        rows.append(row)
    return rows


def _apply_review(
    rows: dict[str, list[dict[str, Any]]], decisions: dict[str, Any], result: SynthesisResult, image_dir: Path
) -> Counter:
    """Drop what a reviewer rejected from `rows` and `result`, with its observation images; returns
    the review's counts."""
    review = apply_decisions(rows, decisions)
    kept = {r["traj_id"] for name in REVIEWED_SETS for r in rows[name]}
    for trajs in result.trajectories.values():
        for t in trajs:
            if t.traj_id not in kept:
                remove_images(image_dir / t.traj_id)
    result.trajectories = {k: [t for t in v if t.traj_id in kept] for k, v in result.trajectories.items()}
    return review


def _build_metrics(
    t0: float,
    cfg: BuildConfig,
    infos: dict[str, _VideoInfo],
    n_bad: int,
    skipped: Counter,
    ocr: _OCRPass,
    grounded: _Grounding,
    written: _Written,
    reviewed: bool,
    rewritten: bool,
) -> dict[str, Any]:
    """The build's metrics (the key order is the metrics file's); `seconds` since `t0`."""
    kinds = Counter(t.kind for trajs in written.trajectories.values() for t in trajs)
    review = written.review
    return {
        "n_videos": len(infos),
        "n_videos_skipped": n_bad,
        "n_samples_train": len(grounded.contexts),
        "n_samples_val": written.n_val,
        "n_samples_test": written.n_test,
        "n_drp": len(written.trajectories["drp"]),
        "n_crp": len(written.trajectories["crp"]),
        "n_drp_clip": kinds["drp_clip"],
        "n_drp_crop": kinds["drp_crop"],
        "n_rl_d": len(written.rl_d),
        "n_rl_c": len(written.rl_c),
        "dropped": dict(sorted(grounded.dropped.items())),
        "skipped": dict(sorted(skipped.items())),
        "evidence_origin": dict(sorted(grounded.evidence_origin.items())),
        **(
            detection_agreement(grounded.contexts, grounded.detects, cfg.vision.crop_margin)
            if cfg.detection is not None
            else {}
        ),
        **(
            {"review_accepted": review["review_accepted"], "review_stale": review["review_stale"]}
            if reviewed
            else {}
        ),
        **({"thoughts": dict(sorted(written.thoughts.items()))} if rewritten else {}),
        "ocr_videos": len(ocr.videos),
        "ocr_frames_read": sum(len(infos[v].frame_indices) for v in ocr.read),
        "ocr_gt_boxes": ocr.gt_boxes,
        "ocr_gt_agreement": round(ocr.gt_hits / ocr.gt_boxes, 4) if ocr.gt_boxes else None,
        "frame_cache_hit_rate": round(FRAME_CACHE.hits / max(1, FRAME_CACHE.hits + FRAME_CACHE.misses), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


@dataclass
class M4ViteVQASourceParams:
    """`data.m4vitevqa`: where a user's M4-ViteVQA copy lives (see README, "Paper scale")."""

    root: Path | None = None
    train_file: str | None = "ViteVQA_0.0.2_t1s1train.json"
    val_file: str | None = "ViteVQA_0.0.2_t1s1val.json"  # optional: absent under root, no val samples
    test_file: str | None = "ViteVQA_0.0.2_t1s1test.json"
    videos_dir: str = "videos"
    ocr_dir: str | None = "video_ocr"


@dataclass
class OCRParams:
    max_videos: int = 4  # OCR every shown frame of this many training videos; -1 = all
    min_anls: float = 0.5  # an OCR token matches an answer at ANLS similarity >= this


@dataclass
class SizesParams:
    """Caps on each dataset; paper scale: drp 7000, crp 10000, rl_d 15000, rl_c 15000."""

    drp: int = 300
    crp: int = 300
    rl_d: int = 200
    rl_c: int = 200


@dataclass
class TokenizerCorpusParams:
    """`data.tokenizer_corpus`: the sizes of the build whose SFT trajectories train the tiny model's
    tokenizer."""

    drp: int = 300
    crp: int = 300


@dataclass
class QCParams:
    min_evidence_coverage: float = 0.9  # share of the evidence box the final crop must cover
    min_answer_similarity: float = 1.0  # ANLS similarity of what was read to the answer
    min_clip_text_px: float = (
        0.0  # a clip-only trajectory reads text at least this tall in the clipped frame; 0: any
    )


@dataclass
class SynthesisParams:
    """`data.synthesis`: how trajectories are planned.  The defaults are the paper's recipe."""

    evidence_frame: str = (
        "random"  # first | random: which of the frames showing a text a trajectory reads it from
    )
    clip_all_kinds: list[str] = field(
        default_factory=list
    )  # question kinds whose clip selects every shown frame
    crp_variants: list[str] = field(default_factory=lambda: list(CRP_VARIANTS))  # direct, recrop, miss
    crp_crop_target: str = "clip"  # clip | frame: which image a CRP trajectory's crops name after its clip

    def __post_init__(self) -> None:
        if self.crp_crop_target not in CRP_CROP_TARGETS:
            raise ParamsError(
                f"params data.synthesis.crp_crop_target: {self.crp_crop_target!r} is not one of "
                f"{', '.join(CRP_CROP_TARGETS)}"
            )
        if self.evidence_frame not in ("first", "random"):
            raise ParamsError(
                f"params data.synthesis.evidence_frame: {self.evidence_frame!r} is not one of first, random"
            )
        unknown = sorted(set(self.crp_variants) - set(CRP_VARIANTS))
        if unknown or not self.crp_variants:
            raise ParamsError(
                f"params data.synthesis.crp_variants: {unknown or 'none'} (known: {', '.join(CRP_VARIANTS)})"
            )


@dataclass
class DetectionParams:
    """`data.detection`: a zero-shot detector grounds what the question names where OCR finds no answer
    text."""

    model: str | None = (
        None  # null: off; a local folder or Hub id (OWLv2 / OWL-ViT / Grounding DINO); tiny: see detector_for
    )
    max_videos: int = 4  # detect on the OCR'd training videos, at most this many; -1 = all
    box_threshold: float = 0.1
    max_per_phrase: int = 3
    cache_dir: str | None = DETECTION_CACHE  # detections by frame content


@dataclass
class CotParams:
    """`data.cot`: who writes the reasoning text of synthesized trajectories."""

    writer: str = "template"  # template | model
    model: str | None = None  # the model writer: any HF chat model, a local folder or Hub id
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy
    batch_size: int = 8
    cache_dir: str | None = ".cache/cot"  # written texts by content hash: a re-run generates nothing

    def __post_init__(self) -> None:
        if self.writer not in ("template", "model"):
            raise ParamsError(f"params data.cot.writer: {self.writer!r} is not one of template, model")
        if self.writer == "model" and not self.model:
            raise ParamsError("params data.cot.model: the model writer needs a checkpoint folder or Hub id")


@dataclass
class ReviewParams:
    """`data.review`: human quality control (`video-r4 data review`)."""

    decisions: str | None = (
        None  # the reviewer's decisions file (kept in git, a dep of build_data); null: none
    )


@dataclass
class DataParams:
    """`data:` in params.yaml, key for key."""

    source: str = "synthetic"  # synthetic | m4vitevqa
    m4vitevqa: M4ViteVQASourceParams = field(default_factory=M4ViteVQASourceParams)
    ocr: OCRParams = field(default_factory=OCRParams)
    sizes: SizesParams = field(default_factory=SizesParams)
    tokenizer_corpus: TokenizerCorpusParams = field(default_factory=TokenizerCorpusParams)
    qc: QCParams = field(default_factory=QCParams)
    synthesis: SynthesisParams = field(default_factory=SynthesisParams)
    detection: DetectionParams = field(default_factory=DetectionParams)
    cot: CotParams = field(default_factory=CotParams)
    review: ReviewParams = field(default_factory=ReviewParams)
    max_bad_fraction: float = 0.5
    max_video_pixels: int = VideoLimits.max_pixels  # per frame or page; more: skipped as video_too_large
    max_frames: int = VideoLimits.max_frames
    max_video_bytes: int = VideoLimits.max_bytes

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ParamsError(f"params data.source: {self.source!r} is not one of {', '.join(SOURCES)}")


SOURCES = ("synthetic", "m4vitevqa")


def data_params(params: dict[str, Any]) -> DataParams:
    return fill(DataParams, section(params, "data"), "data")


def build_config(params: dict[str, Any], out_dir: str | Path = "data/built") -> BuildConfig:
    """The build's settings from `data:`, `vision:`, `rollout.max_tool_calls` and the seed."""
    data = data_params(params)
    seed = int(params.get("seed", 0))
    max_tool_calls = section(params, "rollout").get("max_tool_calls", SynthesisConfig.max_tool_calls)
    synthesis = SynthesisConfig(
        n_drp=data.sizes.drp,
        n_crp=data.sizes.crp,
        max_tool_calls=int(max_tool_calls),
        seed=seed,
        min_evidence_coverage=data.qc.min_evidence_coverage,
        min_answer_similarity=data.qc.min_answer_similarity,
        min_clip_text_px=data.qc.min_clip_text_px,
        clip_all_kinds=tuple(data.synthesis.clip_all_kinds),
        crp_variants=tuple(data.synthesis.crp_variants),
        crp_crop_target=data.synthesis.crp_crop_target,
    )
    return BuildConfig(
        out_dir=Path(out_dir),
        ocr_max_videos=data.ocr.max_videos,
        ocr_min_anls=data.ocr.min_anls,
        n_rl_d=data.sizes.rl_d,
        n_rl_c=data.sizes.rl_c,
        max_bad_fraction=data.max_bad_fraction,
        seed=seed,
        evidence_frame=data.synthesis.evidence_frame,
        synthesis=synthesis,
        vision=vision_config(params),
        review_decisions=Path(data.review.decisions) if data.review.decisions else None,
        detection=data.detection if data.detection.model else None,
        limits=VideoLimits(data.max_video_pixels, data.max_frames, data.max_video_bytes),
        tokenizer_corpus=(data.tokenizer_corpus.drp, data.tokenizer_corpus.crp),
        cot=WriterConfig(
            name_or_path=data.cot.model or "",
            max_new_tokens=data.cot.max_new_tokens,
            temperature=data.cot.temperature,
            batch_size=data.cot.batch_size,
            cache_dir=data.cot.cache_dir,
            seed=seed,
        ),
    )


def load_source(data: DataParams, synthetic_dir: str | Path) -> SourceData:
    """The source `data.source` names: the procedural videos in `synthetic_dir`, or M4-ViteVQA."""
    if data.source == "synthetic":
        return load_synthetic_source(Path(synthetic_dir))
    return load_m4vitevqa_source(dataclasses.asdict(data.m4vitevqa))
