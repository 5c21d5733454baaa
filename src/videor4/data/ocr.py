"""Frame OCR with RapidOCR, cached per video in the M4-ViteVQA OCR layout.

The M4-ViteVQA OCR tokens are released only under agreement, so the pipeline
runs its own OCR when a user has none.  RapidOCR (`rapidocr_onnxruntime`) ships
its models and runs offline, at about a second per frame on a CPU, so results
are cached.  The cache uses the third-party layout users already have
(`video_ocr/<video_id>.json`), so the same reader handles both:

    {"<frame index>": [{"ocr": "SCORE42", "points": [x1, y1, x2, y2, x3, y3, x4, y4]}, ...]}

`points` is the text quad in pixels of the full-resolution source frame.  Our own
entries add "score" (recognition confidence); readers ignore keys they do not
know.  A frame OCR'd with no text found is stored as an empty list so it is not
OCR'd again.

Note: RapidOCR's bundled PP-OCR models drop the spaces between Latin words
("CODE 7K3X" reads "CODE7K3X"); `videor4.data.evidence` matches with that in mind.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videor4.core.io import is_number, read_json, write_json
from videor4.core.schema import TextBox

OcrFrames = dict[int, list[dict[str, Any]]]


class OcrEngine:
    """A RapidOCR instance, built on first use (model load takes about half a second).

    `params` go to `RapidOCR(**params)` (e.g. `det_limit_side_len=960`).
    `calls` counts frames actually OCR'd, so callers can see cache hits.
    """

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.calls = 0
        self._ocr: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR  # heavy: onnxruntime + cv2

            self._ocr = RapidOCR(**self.params)
        return self._ocr

    def read(self, frame_rgb: np.ndarray) -> list[tuple[str, list[float], float]]:
        """OCR one RGB frame: [(text, [x1, y1, ..., x4, y4] in pixels, score), ...]."""
        bgr = _to_bgr(frame_rgb)
        # One onnxruntime session is not meant to be driven from several threads
        # at once; frames from a thread pool take turns.
        with self._lock:
            result, _elapse = self._engine()(bgr)
            self.calls += 1
        lines = []
        for quad, text, score in result or []:
            text = str(text).strip()
            if not text:
                continue
            points = [round(float(v), 2) for xy in quad for v in xy]
            lines.append((text, points, float(score)))
        return lines


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.stack([frame] * 3, axis=-1)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {frame.shape}")
    return np.ascontiguousarray(frame[:, :, 2::-1])  # RGB(A) -> BGR, alpha dropped


_DEFAULT_ENGINE: OcrEngine | None = None
_DEFAULT_LOCK = threading.Lock()


def get_engine() -> OcrEngine:
    """The process-wide default engine (models are loaded once per process)."""
    global _DEFAULT_ENGINE
    with _DEFAULT_LOCK:
        if _DEFAULT_ENGINE is None:
            _DEFAULT_ENGINE = OcrEngine()
        return _DEFAULT_ENGINE


# ---------------------------------------------------------------- cache files
def _parse_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping) or "ocr" not in item or "points" not in item:
        raise ValueError(f"{where}: expected an object with 'ocr' and 'points', got {item!r:.80}")
    text = item["ocr"]
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{where}: 'ocr' must be a string, got {text!r:.80}")
    points = item["points"]
    # Accept [[x, y] * 4] as well as the flat 8-number form.
    if isinstance(points, list) and all(isinstance(p, list) for p in points):
        points = [v for p in points for v in p]
    if not isinstance(points, list) or len(points) != 8 or not all(is_number(v) for v in points):
        raise ValueError(f"{where}: 'points' must be 8 finite numbers, got {item['points']!r:.80}")
    parsed: dict[str, Any] = {"ocr": str(text), "points": [float(v) for v in points]}
    if "score" in item:
        score = item["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{where}: 'score' must be a number, got {score!r:.80}")
        parsed["score"] = float(score)
    return parsed


def parse_ocr(data: Any, source: str) -> OcrFrames:
    """Validate an OCR mapping (frame index -> items); errors name `source`."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected an object mapping frame index to OCR items")
    frames: OcrFrames = {}
    for key, items in data.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: frame key {key!r} is not an integer") from None
        if index < 0:
            raise ValueError(f"{source}: frame key {key!r} is negative")
        if not isinstance(items, list):
            raise ValueError(f"{source}: frame {key}: expected a list of OCR items")
        frames[index] = [_parse_item(item, f"{source}: frame {key} item {i}") for i, item in enumerate(items)]
    return frames


def load_ocr_file(path: str | Path) -> OcrFrames:
    """Read one video's OCR file (M4-ViteVQA third-party layout); ValueError if malformed."""
    try:
        data = read_json(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return parse_ocr(data, str(path))


def ocr_cache_path(cache_dir: str | Path, video_id: str) -> Path:
    if not video_id or "/" in video_id or "\\" in video_id or video_id in (".", ".."):
        raise ValueError(f"video id {video_id!r} cannot name a cache file")
    return Path(cache_dir) / f"{video_id}.json"


def _to_json(frames: OcrFrames) -> dict[str, list[dict[str, Any]]]:
    return {str(index): frames[index] for index in sorted(frames)}


# ---------------------------------------------------------------- OCR a video
def ocr_video(
    video_id: str,
    frames: Sequence[np.ndarray],
    frame_indices: Sequence[int],
    cache_dir: str | Path | None,
    engine: OcrEngine | None = None,
) -> OcrFrames:
    """OCR the given frames of one video, reusing and extending its cache file.

    `frames[i]` is the full-resolution RGB source frame with index
    `frame_indices[i]`; frames already in the cache are not looked at.  Returns
    the OCR items for the requested indices.  With `cache_dir=None` nothing is
    read or written.  A malformed cache file raises ValueError (it may be a
    user's file, so it is never silently overwritten).
    """
    if len(frames) != len(frame_indices):
        raise ValueError(f"{len(frames)} frames but {len(frame_indices)} frame indices")
    path = None if cache_dir is None else ocr_cache_path(cache_dir, video_id)
    cached: OcrFrames = load_ocr_file(path) if path is not None and path.exists() else {}

    new: OcrFrames = {}
    for frame, index in zip(frames, frame_indices):
        index = int(index)
        if index in cached or index in new:
            continue
        lines = (engine or get_engine()).read(frame)
        new[index] = [
            {"ocr": text, "points": points, "score": round(score, 4)} for text, points, score in lines
        ]

    if new and path is not None:
        # Re-read just before writing: another worker may have added frames meanwhile.
        merged = load_ocr_file(path) if path.exists() else {}
        merged.update(new)
        write_json(path, _to_json(merged))
    everything = {**cached, **new}
    return {int(i): everything[int(i)] for i in frame_indices}


def ocr_to_text_boxes(
    ocr: Mapping[int, Sequence[Mapping[str, Any]]], width: int, height: int
) -> list[TextBox]:
    """OCR items -> TextBoxes: axis-aligned box around each quad, normalized and clamped."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    boxes = []
    for index in sorted(ocr):
        for item in ocr[index]:
            text = str(item["ocr"]).strip()
            if not text:
                continue
            xs, ys = item["points"][0::2], item["points"][1::2]
            bbox = [
                min(max(min(xs) / width, 0.0), 1.0),
                min(max(min(ys) / height, 0.0), 1.0),
                min(max(max(xs) / width, 0.0), 1.0),
                min(max(max(ys) / height, 0.0), 1.0),
            ]
            boxes.append(
                TextBox(
                    frame=int(index), text=text, bbox=bbox, role="ocr", score=float(item.get("score", 1.0))
                )
            )
    return boxes
