"""Zero-shot object detection as evidence, beside OCR.

OCR says where text is; it cannot say which *thing* a question is about ("the
red sign", "the black van on the right").  As in the Video-R4 paper, such
questions are grounded with an open-vocabulary detector prompted with the
question's noun phrases (`noun_phrases`).  Any checkpoint that
`transformers.AutoModelForZeroShotObjectDetection` loads works (OWLv2, OWL-ViT,
Grounding DINO); only OWLv2 is exercised by the tests, through a tiny randomly
initialised model built locally (`build_tiny_detector`), since nothing can be
downloaded there.

Boxes are normalized [x1, y1, x2, y2] in [0, 1] of the source frame and frames
are 0-based source indices, as everywhere (see `videor4.core.schema`).

Detection is slow on a CPU (OWLv2-base: seconds per frame), so results are
cached by frame *content* (`DetectionCache`): the same pixels prompted with the
same phrases by the same detector are never run twice, whichever video or frame
index they come from.

OWLv2 detail worth knowing: its image processor pads every frame to a square
(bottom and right) before resizing, and its post-processing scales boxes by
max(height, width) on both axes.  Pixel boxes can therefore reach into the
padding, below or right of the frame; they are clipped to the frame here, and a
box left with no area inside the frame is dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videor4.core.io import atomic_dir, folder_fingerprint, load_json_file, write_json
from videor4.data.evidence import box_iou


# ---------------------------------------------------------------- records
@dataclass
class Detection:
    """One detected object: the prompt phrase it answers, where, how sure."""

    frame: int  # 0-based source frame index
    label: str  # the prompt phrase ("red sign")
    bbox: list[float]  # normalized [x1, y1, x2, y2], clipped to [0, 1]
    score: float

    def __post_init__(self) -> None:
        if (
            not isinstance(self.bbox, (list, tuple))
            or len(self.bbox) != 4
            or not all(_finite(v) for v in self.bbox)
        ):
            raise ValueError(f"bbox must be 4 finite numbers, got {self.bbox!r:.80}")
        self.bbox = [min(max(float(v), 0.0), 1.0) for v in self.bbox]
        if self.bbox[0] > self.bbox[2] or self.bbox[1] > self.bbox[3]:
            raise ValueError(f"bbox must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got {self.bbox}")
        if not _finite(self.score):
            raise ValueError(f"score must be a finite number, got {self.score!r}")
        self.frame, self.label, self.score = int(self.frame), str(self.label), float(self.score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detection:
        return cls(frame=int(d["frame"]), label=str(d["label"]), bbox=list(d["bbox"]), score=d["score"])


# ---------------------------------------------------------------- input checks
def _finite(v: Any) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v))


def _check_frame(frame: Any, i: int) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"frame {i}: expected an HxWx3 uint8 RGB array, got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr


def _check_phrases(phrases: Sequence[str]) -> list[str]:
    """Stripped, de-duplicated (first occurrence kept) phrases; ValueError if there are none."""
    if isinstance(phrases, str):
        raise ValueError(f"phrases must be a list of strings, got the string {phrases!r}")
    out: list[str] = []
    for p in phrases:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"every phrase must be a non-empty string, got {p!r}")
        if p.strip() not in out:
            out.append(p.strip())
    if not out:
        raise ValueError("no phrases to detect: give at least one object phrase")
    return out


# ---------------------------------------------------------------- the detector
class ZeroShotDetector:
    """A text-prompted detector, loaded on first use (a checkpoint load takes seconds).

    `name_or_path` is a local folder or a Hub id.  Detections scoring at or below
    `box_threshold` are dropped, then at most `max_per_phrase` (best first) are kept
    per phrase and frame.  `calls` counts frames actually run, so callers can see
    cache hits.
    """

    def __init__(
        self,
        name_or_path: str | Path,
        device: str = "cpu",
        box_threshold: float = 0.1,
        max_per_phrase: int = 3,
        batch_size: int = 4,
    ) -> None:
        if max_per_phrase < 1 or batch_size < 1:
            raise ValueError(
                f"max_per_phrase and batch_size must be >= 1, got {max_per_phrase} and {batch_size}"
            )
        self.name_or_path = str(name_or_path)
        self.device = device
        self.box_threshold = float(box_threshold)
        self.max_per_phrase = int(max_per_phrase)
        self.batch_size = int(batch_size)
        self.calls = 0
        self._model: Any = None
        self._processor: Any = None
        self._id: str | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        """What the cache keys on: the checkpoint and the settings that change the output.

        A local folder is named by a digest of its files rather than its path, so a
        checkpoint rebuilt in place (another seed, a fine-tune) never reads the old
        one's cache, and a moved folder still hits it (`core.io.folder_fingerprint`:
        weights by sampled blocks, so computing it is quick).  A Hub id is
        taken as is (no revision), and the device is not part of it.
        """
        if self._id is None:
            path = Path(self.name_or_path)
            source = f"sha256:{folder_fingerprint(path)}" if path.is_dir() else self.name_or_path
            self._id = f"{source}|box_threshold={self.box_threshold!r}|max_per_phrase={self.max_per_phrase}"
        return self._id

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor  # heavy

            self._processor = AutoProcessor.from_pretrained(self.name_or_path)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(self.name_or_path)
            self._model = model.to(self.device).eval()
        return self._model, self._processor

    def detect(
        self, frames: Sequence[np.ndarray], phrases: Sequence[str], frame_indices: Sequence[int] | None = None
    ) -> list[list[Detection]]:
        """Detect `phrases` in each RGB frame: one list per frame, best score first.

        `frame_indices[i]` is the source index stamped on frame i's detections
        (default: the position in `frames`).
        """
        arrays = [_check_frame(f, i) for i, f in enumerate(frames)]
        phrases = _check_phrases(phrases)
        indices = list(range(len(arrays))) if frame_indices is None else [int(i) for i in frame_indices]
        if len(indices) != len(arrays):
            raise ValueError(f"{len(arrays)} frames but {len(indices)} frame indices")
        out: list[list[Detection]] = []
        for start in range(0, len(arrays), self.batch_size):
            batch = arrays[start : start + self.batch_size]
            with self._lock:  # one model, driven by one thread at a time
                results = self._run(batch, phrases)
                self.calls += len(batch)
            for arr, index, result in zip(batch, indices[start : start + self.batch_size], results):
                out.append(
                    self._to_detections(result, phrases, index, width=arr.shape[1], height=arr.shape[0])
                )
        return out

    def _run(self, batch: list[np.ndarray], phrases: list[str]) -> list[dict[str, Any]]:
        import torch
        from PIL import Image

        model, processor = self._load()
        # PIL images: no guessing whether a small array is channels-first.
        images = [Image.fromarray(arr) for arr in batch]
        inputs = processor(text=[phrases] * len(batch), images=images, return_tensors="pt", truncation=True)
        inputs = inputs.to(self.device)
        sizes = [(arr.shape[0], arr.shape[1]) for arr in batch]  # (height, width) in pixels
        with torch.no_grad():
            outputs = model(**inputs)
            if hasattr(processor, "post_process_grounded_object_detection"):
                results = processor.post_process_grounded_object_detection(
                    outputs,
                    threshold=self.box_threshold,
                    target_sizes=sizes,
                    text_labels=[phrases] * len(batch),
                )
            else:
                results = processor.image_processor.post_process_object_detection(
                    outputs, threshold=self.box_threshold, target_sizes=sizes
                )
        return results

    def _to_detections(
        self, result: dict[str, Any], phrases: list[str], frame: int, width: int, height: int
    ) -> list[Detection]:
        boxes = result["boxes"].detach().float().cpu().tolist()
        scores = result["scores"].detach().float().cpu().tolist()
        labels = result.get("text_labels") or result["labels"]
        found: list[Detection] = []
        for box, score, label in zip(boxes, scores, labels):
            phrase = _label_phrase(label, phrases)
            if phrase is None or not math.isfinite(score):
                continue
            x1, y1, x2, y2 = (
                min(max(v, 0.0), 1.0)
                for v in (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
            )
            if x2 <= x1 or y2 <= y1:
                continue  # nothing left inside the frame (OWLv2 boxes can lie in its padding)
            bbox = [round(v, 6) for v in (x1, y1, x2, y2)]
            found.append(Detection(frame=frame, label=phrase, bbox=bbox, score=round(score, 6)))
        found.sort(key=lambda d: (-d.score, phrases.index(d.label), d.bbox))
        kept: list[Detection] = []
        per_phrase: dict[str, int] = {}
        for d in found:
            if per_phrase.get(d.label, 0) < self.max_per_phrase:
                per_phrase[d.label] = per_phrase.get(d.label, 0) + 1
                kept.append(d)
        return kept


def _label_phrase(label: Any, phrases: list[str]) -> str | None:
    """The prompt phrase a post-processed label stands for.

    OWL models label by query index (or by the phrase itself through
    `text_labels`); Grounding DINO labels by the words of the prompt it matched,
    which may be part of a phrase ("sign" for "red sign"): the phrase sharing the
    most words wins, and a label sharing none is dropped.
    """
    if hasattr(label, "item"):
        label = label.item()
    if isinstance(label, int) and not isinstance(label, bool):
        return phrases[label] if 0 <= label < len(phrases) else None
    text = " ".join(str(label).lower().split())
    exact = [p for p in phrases if " ".join(p.lower().split()) == text]
    if exact:
        return exact[0]
    words = set(text.split())
    best = max(phrases, key=lambda p: len(words & set(p.lower().split())))
    return best if words & set(best.lower().split()) else None


# ---------------------------------------------------------------- cache by frame content
class DetectionCache:
    """Detections per (frame pixels, phrases, detector), one JSON file each.

    Files live at `<dir>/<key[:2]>/<key>.json` and hold the detections without
    a frame index (the same pixels may appear at any index of any video):

        {"detector": "...", "phrases": [...], "detections": [{"label", "bbox", "score"}, ...]}

    A frame with nothing found is stored with an empty list so it is not run
    again.  Writes are atomic (temporary sibling, then os.replace).  A malformed
    file raises ValueError naming it rather than being silently recomputed.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)

    @staticmethod
    def key(frame_rgb: np.ndarray, phrases: Sequence[str], detector_id: str) -> str:
        """sha256 over the frame's shape and pixels, the sorted phrases and the detector id."""
        arr = _check_frame(frame_rgb, 0)
        header = json.dumps(
            {"shape": list(arr.shape), "phrases": sorted(_check_phrases(phrases)), "detector": detector_id}
        )
        h = hashlib.sha256(header.encode() + b"\0")
        h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """The stored detections (label, bbox, score) or None when not cached."""
        path = self.path(key)
        if not path.exists():
            return None
        data = load_json_file(path, "detection cache file")
        items = data.get("detections") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError(
                f"{path}: not a detection cache file (expected an object with a 'detections' list)"
            )
        found = []
        for i, item in enumerate(items):
            try:
                d = Detection.from_dict({**item, "frame": 0})
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: detection {i} is malformed ({exc!s:.120})") from exc
            found.append({"label": d.label, "bbox": d.bbox, "score": d.score})
        return found

    def put(
        self, key: str, detections: Iterable[Detection], phrases: Sequence[str], detector_id: str
    ) -> None:
        items = [{"label": d.label, "bbox": d.bbox, "score": d.score} for d in detections]
        write_json(
            self.path(key),
            {"detector": detector_id, "phrases": sorted(_check_phrases(phrases)), "detections": items},
        )


def detect_cached(
    detector: ZeroShotDetector,
    cache: DetectionCache,
    frames: Sequence[np.ndarray],
    phrases: Sequence[str],
    frame_indices: Sequence[int] | None = None,
) -> list[list[Detection]]:
    """`detector.detect`, running only frames whose content is not cached yet.

    Frames with identical pixels within one call are run once.
    """
    arrays = [_check_frame(f, i) for i, f in enumerate(frames)]
    phrases = _check_phrases(phrases)
    indices = list(range(len(arrays))) if frame_indices is None else [int(i) for i in frame_indices]
    if len(indices) != len(arrays):
        raise ValueError(f"{len(arrays)} frames but {len(indices)} frame indices")
    keys = [cache.key(arr, phrases, detector.id) for arr in arrays]
    stored: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, np.ndarray] = {}
    for key, arr in zip(keys, arrays):
        if key in stored or key in missing:
            continue
        hit = cache.get(key)
        if hit is None:
            missing[key] = arr
        else:
            stored[key] = hit
    if missing:
        fresh = detector.detect(list(missing.values()), phrases)
        for key, found in zip(missing, fresh):
            cache.put(key, found, phrases, detector.id)
            stored[key] = [{"label": d.label, "bbox": d.bbox, "score": d.score} for d in found]
    return [[Detection(frame=index, **item) for item in stored[key]] for key, index in zip(keys, indices)]


# ---------------------------------------------------------------- phrases from questions
_DETERMINERS = {"the", "a", "an"}
# A phrase ends at any of these (or at punctuation).
_BREAKS = {
    "on",
    "in",
    "at",
    "of",
    "to",
    "from",
    "with",
    "near",
    "above",
    "below",
    "under",
    "behind",
    "beside",
    "between",
    "by",
    "over",
    "for",
    "inside",
    "onto",
    "into",
    "across",
    "along",
    "around",
    "after",
    "before",
    "during",
    "and",
    "or",
    "but",
    "that",
    "which",
    "who",
    "whose",
    "where",
    "when",
    "while",
    "than",
    "as",
    "if",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "does",
    "do",
    "did",
    "say",
    "says",
    "said",
    "show",
    "shows",
    "shown",
    "read",
    "reads",
    "display",
    "displays",
    "displayed",
    "have",
    "has",
    "had",
    "appear",
    "appears",
    "contain",
    "contains",
    "written",
    "can",
    "will",
    "next",
}
# Words that name no detectable object (positions, the video itself, the text itself); phrases made
# only of them are dropped, and they are trimmed from a phrase's start.
_NON_OBJECTS = {
    "one",
    "ones",
    "number",
    "numbers",
    "text",
    "word",
    "words",
    "letter",
    "letters",
    "value",
    "digit",
    "digits",
    "name",
    "code",
    "answer",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "center",
    "centre",
    "front",
    "back",
    "background",
    "foreground",
    "side",
    "corner",
    "video",
    "clip",
    "frame",
    "frames",
    "screen",
    "image",
    "picture",
    "scene",
    "time",
    "moment",
    "end",
    "beginning",
    "start",
    "same",
    "other",
    "previous",
    "first",
    "second",
    "third",
    "last",
    "price",
    "title",
    "date",
    "year",
    "color",
    "colour",
    "score",
    "total",
    "amount",
    "type",
    "kind",
    "most",
    "largest",
    "smallest",
    "biggest",
    "only",
}
_MAX_WORDS = 4


def noun_phrases(question: str) -> list[str]:
    """The object phrases a question names, for prompting a detector.

    "What code is on the red sign?" -> ["red sign"].  A phrase is the words after
    "the", "a" or "an" up to a preposition, conjunction, common verb or
    punctuation (at most four words), with leading non-object words ("same",
    "left", "number") trimmed; phrases made only of such words are dropped.
    Deterministic and lower-cased, first occurrences in order; [] when there are none.

    Limits: a heuristic, not a parser.  Bare plurals ("How many cars ...") and
    phrases without a determiner ("on red signs") are missed; a generic head noun
    can remain ("the red one" -> "red one"); words outside the lists above
    are kept as part of the phrase (verbs not listed included: "the van parked"
    -> "van parked"); the word lists are English only.
    """
    tokens = re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]", question.lower())
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if tok not in _DETERMINERS:
            continue
        words: list[str] = []
        for word in tokens[i + 1 : i + 1 + _MAX_WORDS]:
            if not word[0].isalnum() or word in _BREAKS or word in _DETERMINERS:
                break
            words.append(word)
        while words and words[0] in _NON_OBJECTS:
            words.pop(0)
        if words:
            phrase = " ".join(words)
            if phrase not in out:
                out.append(phrase)
    return out


# ---------------------------------------------------------------- choosing and scoring
def best_detection(
    detections: Iterable[Iterable[Detection]], frames: Iterable[int], phrase: str
) -> Detection | None:
    """The highest-scoring detection of `phrase` on one of the source `frames` (ties: earliest frame)."""
    wanted = {int(f) for f in frames}
    best: Detection | None = None
    for per_frame in detections:
        for d in per_frame:
            if (
                d.label == phrase
                and d.frame in wanted
                and (best is None or (-d.score, d.frame) < (-best.score, best.frame))
            ):
                best = d
    return best


def detection_gt_agreement(
    pairs: Iterable[tuple[Detection | None, Sequence[float]]], min_iou: float = 0.5
) -> tuple[float, int]:
    """How often the chosen detection sits on the ground-truth box: (rate, number of pairs).

    A pair counts when its detection exists and has IoU >= `min_iou` with the
    ground-truth box; a missing detection (None) counts as a miss.  With no pairs
    the rate is 0.0 (check n).
    """
    n = hits = 0
    for det, gt in pairs:
        n += 1
        if det is not None and box_iou(det.bbox, gt) >= min_iou:
            hits += 1
    return (hits / n if n else 0.0), n


# ---------------------------------------------------------------- a tiny local checkpoint
_TINY_IMAGE_SIZE = 64
_TINY_TEXT_LENGTH = 32  # the byte-level tokenizer spends a token per character


def _byte_level_tokenizer() -> Any:
    """A CLIP tokenizer with no merges: every byte is a token (built offline).

    The vocabulary is the 256 byte-level characters, their end-of-word forms and
    the two special tokens, in that order: "!" (the first byte-level character)
    gets id 0, which OWL checkpoints use for padding, and "<|endoftext|>" gets the
    highest id, because OWL's text model pools at the argmax of the input ids.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
        Path(tmp, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, pad_token="!", model_max_length=_TINY_TEXT_LENGTH)
    if tokenizer.pad_token_id != 0 or tokenizer.eos_token_id != len(tokenizer) - 1:
        raise RuntimeError(
            f"unexpected tiny tokenizer ids: pad {tokenizer.pad_token_id}, eos {tokenizer.eos_token_id}"
        )
    return tokenizer


def build_tiny_detector(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny OWLv2 (model + processor) that `ZeroShotDetector` loads.

    For tests and the embedded default: it exercises the real load, pre- and
    post-processing path without downloading a checkpoint.  Its detections mean
    nothing.  The same seed gives the same weights.  The image processor is the
    torchvision one when torchvision is installed, else the PIL one (their
    resizing differs slightly, so outputs can too).
    """
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import Owlv2ImageProcessor as ImageProcessor
    else:
        from transformers import Owlv2ImageProcessorPil as ImageProcessor

    tokenizer = _byte_level_tokenizer()
    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": _TINY_TEXT_LENGTH,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": _TINY_IMAGE_SIZE,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = Owlv2ForObjectDetection(config).eval()
        # Owlv2Config has no initializer_range, so transformers initialises the detection heads'
        # Linear layers with std = initializer_factor = 1.0: the box head saturates its sigmoid and
        # every box comes out with zero width at the frame's edge.  Small heads keep the boxes near
        # OWLv2's per-patch prior instead (and the class scores near sigmoid(0) = 0.5).
        with torch.no_grad():
            for head in (model.class_head, model.box_head, model.objectness_head):
                for module in head.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.weight.normal_(0.0, 0.02)
                        module.bias.zero_()
    size = {"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE}
    processor = Owlv2Processor(image_processor=ImageProcessor(size=size), tokenizer=tokenizer)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out_dir)
