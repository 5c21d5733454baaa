"""Frames from videos (decord) or page folders, a shared frame cache, and the
Qwen "smart resize" pixel-budget rule.

Full-resolution frames are kept (crops are always cut from them); the
downscaled views the model sees are derived with `resize_to_budget`.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PATCH_FACTOR = 28  # Qwen2-VL / Qwen2.5-VL: 14 px patches merged 2x2


class VideoError(Exception):
    """A video (or page folder) that cannot be used; `reason` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class FrameRangeError(VideoError, IndexError):
    """Frames asked for that the source does not have (a video shorter than its record says)."""

    def __init__(self, message: str):
        super().__init__("frame_range", message)


# What reading a video or a page image raises when the file, not the code, is at fault: a missing,
# empty or undecodable source (VideoError) or what PIL and the file system raise (OSError, which
# PIL's UnidentifiedImageError is, and DecompressionBombError: a small file declaring more pixels
# than PIL will decode).  Callers that skip bad inputs catch these and nothing broader.
READ_ERRORS = (VideoError, OSError, Image.DecompressionBombError)


def _page_error(page: Path, exc: Exception) -> VideoError:
    reason = "too_large" if isinstance(exc, Image.DecompressionBombError) else "corrupt"
    return VideoError(reason, f"cannot read page image {page}: {exc}")


def page_size(page: Path) -> tuple[int, int]:
    """A page image's (width, height) from its header, nothing decoded; VideoError if unreadable."""
    try:
        with Image.open(page) as im:
            return im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise _page_error(page, exc) from exc


# ---------------------------------------------------------------- pixel budgets
def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_FACTOR,
    min_pixels: int = 4 * PATCH_FACTOR * PATCH_FACTOR,
    max_pixels: int = 512 * PATCH_FACTOR * PATCH_FACTOR,
) -> tuple[int, int]:
    """Qwen2-VL's rule: sides are multiples of `factor`, area within [min, max], aspect kept."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200 ({width}x{height})")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_to_budget(
    image: np.ndarray | Image.Image,
    max_pixels: int,
    min_pixels: int = 4 * PATCH_FACTOR * PATCH_FACTOR,
    factor: int = PATCH_FACTOR,
) -> Image.Image:
    """Re-encode pixels at the size the smart-resize rule gives for this budget."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    h, w = smart_resize(img.height, img.width, factor, min_pixels, max_pixels)
    if (w, h) == img.size:
        return img.copy()
    return img.resize((w, h), Image.BICUBIC)


# ---------------------------------------------------------------- frame sampling
def uniform_indices(total: int, n: int) -> list[int]:
    """n frame indices spread evenly over [0, total-1], first and last included."""
    if total <= 0:
        return []
    if n >= total:
        return list(range(total))
    return [int(round(x)) for x in np.linspace(0, total - 1, n)]


def fps_indices(total: int, source_fps: float, fps: float, max_frames: int | None = None) -> list[int]:
    """Indices at a target fps; thinned uniformly if more than `max_frames`."""
    if total <= 0:
        return []
    step = max(source_fps / fps, 1.0) if fps > 0 and source_fps > 0 else 1.0
    idx = [p for p in (int(round(i * step)) for i in range(int(total / step) + 1)) if p < total]
    if max_frames and len(idx) > max_frames:
        idx = [idx[i] for i in uniform_indices(len(idx), max_frames)]
    return idx


# ---------------------------------------------------------------- sources
class FrameSource:
    """Random access to the frames of an mp4 (decord) or of page images."""

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike]):
        self.pages: list[Path] | None = None
        if isinstance(path, (list, tuple)):
            self.pages = [Path(p) for p in path]
            self.path = self.pages[0].parent if self.pages else Path(".")
        else:
            self.path = Path(path)
            if self.path.is_dir():
                self.pages = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._reader = None
        if self.pages is not None:
            if not self.pages:
                raise VideoError("empty", f"{self.path}: no page images ({', '.join(IMAGE_SUFFIXES)})")
            missing = [p for p in self.pages if not p.is_file()]
            if missing:
                raise VideoError("missing", f"page image not found: {missing[0]}")
            self.num_frames = len(self.pages)
            self.fps = 1.0
            self.width, self.height = page_size(self.pages[0])
            return
        if not self.path.exists():
            raise VideoError("missing", f"video not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise VideoError("empty", f"video file is empty: {self.path}")
        import decord  # lazy: only sources that are real videos need it

        try:
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._reader)
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError
            raise VideoError(
                "corrupt", f"cannot decode video {self.path}: {str(exc).splitlines()[0][:200]}"
            ) from exc
        if self.num_frames == 0:
            raise VideoError("empty", f"video has no frames: {self.path}")
        self.fps = float(self._reader.get_avg_fps() or 0.0)
        first = self._reader[0].shape
        self.height, self.width = int(first[0]), int(first[1])

    def get(self, indices: Sequence[int]) -> list[np.ndarray]:
        """RGB uint8 arrays (H, W, 3) at full resolution."""
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise FrameRangeError(f"frame {bad[0]} out of range 0..{self.num_frames - 1} in {self.path}")
        if self.pages is not None:
            out = []
            for i in indices:
                try:
                    with Image.open(self.pages[i]) as im:
                        out.append(np.asarray(im.convert("RGB")))
                except (OSError, Image.DecompressionBombError) as exc:
                    raise _page_error(self.pages[i], exc) from exc
            return out
        try:
            batch = self._reader.get_batch(list(indices)).asnumpy()
        except Exception as exc:
            raise VideoError(
                "corrupt", f"cannot decode frames of {self.path}: {str(exc).splitlines()[0][:200]}"
            ) from exc
        return [np.ascontiguousarray(f) for f in batch]


# ---------------------------------------------------------------- the cache
class FrameCache:
    """An LRU of decoded full-resolution frames shared by everything in the process.

    G rollouts (or synthesis, QC and replay) over one video decode it once.
    Keys include the file's size and mtime so an edited file is re-read.
    """

    def __init__(self, max_bytes: int = 1 << 30, max_open: int = 8):
        self.max_bytes = max_bytes
        self.max_open = max_open
        self._sources: OrderedDict[tuple, FrameSource] = OrderedDict()  # open readers: opening costs a few ms
        self._frames: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _file_key(path: Path) -> tuple:
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    @classmethod
    def _source_key(cls, path: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple:
        paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
        try:
            return tuple(cls._file_key(p) for p in paths)
        except OSError:  # missing: let FrameSource raise its clear VideoError
            return ()

    def source(self, path: str | os.PathLike | Sequence[str | os.PathLike]) -> FrameSource:
        """An open FrameSource for `path`, reused while the file is unchanged."""
        key = self._source_key(path)
        with self._lock:
            if key and key in self._sources:
                self._sources.move_to_end(key)
                return self._sources[key]
        src = FrameSource(path)
        if key:
            with self._lock:
                self._sources[key] = src
                while len(self._sources) > self.max_open:
                    self._sources.popitem(last=False)
        return src

    def get(self, source: FrameSource, indices: Sequence[int]) -> list[np.ndarray]:
        base = self._file_key(source.pages[0] if source.pages else source.path) + (source.num_frames,)
        keys = [base + (i,) for i in indices]
        with self._lock:
            found = {k: self._frames[k] for k in keys if k in self._frames}
            for k in found:
                self._frames.move_to_end(k)
        missing = [i for i, k in zip(indices, keys) if k not in found]
        self.hits += len(indices) - len(missing)
        self.misses += len(missing)
        if missing:
            uniq = sorted(set(missing))
            for i, frame in zip(uniq, source.get(uniq)):
                found[base + (i,)] = frame
                with self._lock:
                    if base + (i,) not in self._frames:
                        self._frames[base + (i,)] = frame
                        self._bytes += frame.nbytes
                    while self._bytes > self.max_bytes and self._frames:
                        _, old = self._frames.popitem(last=False)
                        self._bytes -= old.nbytes
        return [found[k] for k in keys]

    def clear(self) -> None:
        with self._lock:
            self._sources.clear()
            self._frames.clear()
            self._bytes = 0
            self.hits = self.misses = 0


FRAME_CACHE = FrameCache()


@dataclass
class VideoFrames:
    """The frames of one video chosen for the model, at full resolution."""

    path: str
    indices: list[int]  # source frame indices, in order
    frames: list[np.ndarray]
    fps: float
    num_source_frames: int
    width: int
    height: int

    def timestamps(self) -> list[float]:
        return [i / self.fps if self.fps else float(i) for i in self.indices]


def load_frames(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    num_frames: int | None = 8,
    fps: float | None = None,
    indices: Sequence[int] | None = None,
    cache: FrameCache | None = FRAME_CACHE,
) -> VideoFrames:
    """Sample frames uniformly (`num_frames`), at `fps`, or at explicit `indices`.

    Raises VideoError for a missing, empty or undecodable source.
    """
    source = cache.source(path) if cache is not None else FrameSource(path)
    if indices is None:
        if fps:
            indices = fps_indices(source.num_frames, source.fps, fps, num_frames)
        else:
            indices = uniform_indices(source.num_frames, num_frames or source.num_frames)
    indices = list(indices)
    frames = cache.get(source, indices) if cache is not None else source.get(indices)
    return VideoFrames(
        path=str(path if not isinstance(path, (list, tuple)) else source.path),
        indices=indices,
        frames=frames,
        fps=source.fps,
        num_source_frames=source.num_frames,
        width=source.width,
        height=source.height,
    )
