"""Shared fixtures: small real videos written with PyAV, decoded with decord."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
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
        img[..., 2] = i * 255 // max(n - 1, 1)
        x = 10 + i * (width - 60) // max(n - 1, 1)
        img[80:120, x : x + 40] = 255
        frames.append(img)
    return frames


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("videos") / "pattern.mp4", pattern_frames())


# ---------------------------------------------------------------- a small built dataset and a tiny policy
TINY_SPEC = {
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vision_hidden_size": 64,
    "vision_intermediate_size": 128,
    "vision_depth": 2,
    "vision_num_heads": 2,
}
SMALL_PARAMS = {
    "seed": 0,
    "synthetic": {"n_videos": 4, "num_frames": 24, "questions_per_video": 3, "test_fraction": 0.25},
    "vision": {
        "num_frames": 6,
        "frame_max_pixels": 6272,
        "clip_max_pixels": 25088,
        "crop_min_pixels": 12544,
        "crop_max_pixels": 50176,
    },
    "data": {"ocr": {"max_videos": 0}, "sizes": {"drp": 10, "crp": 10, "rl_d": 4, "rl_c": 4}},
}


@pytest.fixture(scope="session")
def small_built(tmp_path_factory) -> Path:
    """videos → data build (no OCR, for speed): the datasets SFT and RL read."""
    from videor4.data.build import (
        build_config,
        build_datasets,
        load_synthetic_source,
        make_synthetic_source,
        validate_dataset,
    )
    from videor4.data.synthetic import synthetic_config

    root = tmp_path_factory.mktemp("small")
    make_synthetic_source(root / "synthetic", synthetic_config(SMALL_PARAMS))
    cfg = build_config(SMALL_PARAMS, root / "built")
    cfg.ocr_cache_dir = root / "ocr-cache"
    build_datasets(load_synthetic_source(root / "synthetic"), cfg, validate=validate_dataset)
    return root / "built"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, small_built) -> Path:
    """The embedded default, shrunk: a saved tiny Qwen2.5-VL checkpoint."""
    from videor4.policy.model import TinySpec, build_tiny_checkpoint

    out = tmp_path_factory.mktemp("tiny") / "base"
    build_tiny_checkpoint(
        TinySpec(**TINY_SPEC), [small_built / "sft_drp.jsonl", small_built / "sft_crp.jsonl"], out
    )
    return out


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by its relative path: for comparing folders byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- real servers the tests start (and stop)
def free_port() -> int:
    from videor4.core.launch import free_loopback_port

    return free_loopback_port()


class Server:
    """A server process this test session started, in its own session so nothing else is touched.

    `stop()` ends exactly that process and the children it spawned (found through psutil
    while it runs), never anything matched by name.
    """

    def __init__(
        self, cmd: list[str], port: int, env: dict[str, str], log: Path, ready_timeout: float = 60.0
    ) -> None:
        import subprocess
        import time

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_fh = open(log, "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + ready_timeout
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{cmd[0]} did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _listening(self) -> bool:
        import socket

        # a bare TCP connect: an HTTP probe would count as a request (moto's auth counts them)
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def processes(self) -> list:
        import psutil

        try:
            leader = psutil.Process(self.proc.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        self.proc.wait(timeout=5)  # reap the leader: no zombie left behind
        self._log_fh.close()


@dataclass(frozen=True)
class S3Server:
    """A real S3-compatible endpoint (moto in server mode, with signature checking on)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    server: Server

    def client(self):
        """A boto3 S3 client signed with the server's good credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def env(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        """`base` (default: this process's environment) set up to use this server with good credentials."""
        base = os.environ if base is None else base
        env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "VIDEOR4_S3_", "MLFLOW_S3_"))}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_EC2_METADATA_DISABLED="true",
            VIDEOR4_S3_BUCKET=self.bucket,
        )
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """moto_server on 127.0.0.1 with authentication on: the first three requests (unauthenticated)
    create an IAM user with full access and its key; everything after must be signed with it."""
    import json
    import shutil
    import sys

    import boto3

    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = Server(
        [exe, "-H", "127.0.0.1", "-p", str(port)], port, env, tmp_path_factory.mktemp("moto") / "moto.log"
    )
    try:
        kw = {"endpoint_url": server.url, "region_name": "us-east-1"}
        anonymous = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **kw, **anonymous)
        iam.create_user(UserName="videor4-tests")
        key = iam.create_access_key(UserName="videor4-tests")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="videor4-tests", PolicyName="all", PolicyDocument=json.dumps(policy))
        s3_server = S3Server(server.url, key["AccessKeyId"], key["SecretAccessKey"], "videor4-tests", server)
        s3_server.client().create_bucket(Bucket=s3_server.bucket)
        yield s3_server
    finally:
        server.stop()
