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


# ---------------------------------------------------------------- a small built dataset and a tiny policy
TINY_SPEC = {
    "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "vision_hidden_size": 64,
    "vision_intermediate_size": 128, "vision_depth": 2, "vision_num_heads": 2,
}
SMALL_PARAMS = {
    "seed": 0,
    "synthetic": {"n_videos": 4, "num_frames": 24, "questions_per_video": 3, "test_fraction": 0.25},
    "vision": {
        "num_frames": 6, "frame_max_pixels": 6272, "clip_max_pixels": 25088,
        "crop_min_pixels": 12544, "crop_max_pixels": 50176,
    },
    "data": {"ocr": {"max_videos": 0}, "sizes": {"drp": 10, "crp": 10, "rl_d": 4, "rl_c": 4}},
}


@pytest.fixture(scope="session")
def small_built(tmp_path_factory) -> Path:
    """videos → data build (no OCR, for speed): the datasets SFT and RL read."""
    from videor4.config import build_config, synthetic_config
    from videor4.data.build import build_datasets, load_synthetic_source, make_synthetic_source, validate_dataset

    root = tmp_path_factory.mktemp("small")
    make_synthetic_source(root / "synthetic", synthetic_config(SMALL_PARAMS))
    cfg = build_config(SMALL_PARAMS, root / "built")
    cfg.ocr_cache_dir = root / "ocr-cache"
    build_datasets(load_synthetic_source(root / "synthetic"), cfg, validate=validate_dataset)
    return root / "built"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, small_built) -> Path:
    """The embedded default, shrunk: a saved tiny Qwen2.5-VL checkpoint."""
    from videor4.model import TinySpec, build_tiny_checkpoint

    out = tmp_path_factory.mktemp("tiny") / "base"
    build_tiny_checkpoint(TinySpec(**TINY_SPEC), [small_built / "sft_drp.jsonl", small_built / "sft_crp.jsonl"], out)
    return out
