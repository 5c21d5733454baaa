"""Shared fixtures: small real videos written with PyAV, decoded with decord."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 8) -> Path:
    """Write RGB frames as an H.264 mp4 (near-lossless so tests can compare pixels)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def pattern_frames(n: int = 16, width: int = 320, height: int = 192) -> list[np.ndarray]:
    """Frames whose content depends on the frame number: a gradient plus a moving block."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = (xs * 255 // width).astype(np.uint8)
        img[..., 1] = (ys * 255 // height).astype(np.uint8)
        img[..., 2] = (i * 255 // max(n - 1, 1))
        x = 10 + i * (width - 60) // max(n - 1, 1)
        img[80:120, x : x + 40] = 255
        frames.append(img)
    return frames


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("videos") / "pattern.mp4", pattern_frames())
