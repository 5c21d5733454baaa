"""Time a DVC push of the pipeline's outputs to an S3-compatible server and a pull into a fresh clone.

    python benchmarks/remote_roundtrip.py [--out benchmarks/results/remote_roundtrip.json]

Starts moto's S3 server on 127.0.0.1 (stopped again by pid at the end), points a
temporary local-only DVC remote at it, pushes everything dvc.lock records, clones the
repository and pulls there, then checks the clone's `dvc status` is clean.  Run it after
`dvc repro`.  The server runs on this machine, so the figures measure DVC and the S3
protocol, not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from videor4.core.launch import free_loopback_port

ROOT = Path(__file__).resolve().parent.parent
REMOTE = "bench-roundtrip"
BUCKET = "bench-roundtrip"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started


def add_remote(cwd: Path, endpoint: str, env: dict[str, str]) -> None:
    dvc("remote", "add", "--local", "--force", REMOTE, f"s3://{BUCKET}/dvc", cwd=cwd, env=env)
    dvc("remote", "modify", "--local", REMOTE, "endpointurl", endpoint, cwd=cwd, env=env)


def recorded_outputs(lock: Path) -> tuple[int, int]:
    """(files, bytes) of the outputs dvc.lock records."""
    files = size = 0
    for stage in (yaml.safe_load(lock.read_text()).get("stages") or {}).values():
        for out in stage.get("outs") or []:
            files += int(out.get("nfiles", 1))
            size += int(out.get("size", 0))
    return files, size


def main() -> None:
    import boto3
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DVC_NO_ANALYTICS": "1",
    }
    port = free_loopback_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    server = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    clone = Path(tempfile.mkdtemp(prefix="videor4-roundtrip-"))
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            if time.monotonic() > deadline:
                raise SystemExit("moto_server did not start")
            time.sleep(0.2)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=BUCKET)
        add_remote(ROOT, endpoint, env)
        push = dvc("push", "-r", REMOTE, cwd=ROOT, env=env)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone / "repo")], check=True)
        add_remote(clone / "repo", endpoint, env)
        pull = dvc("pull", "-r", REMOTE, cwd=clone / "repo", env=env)
        status = subprocess.run(
            [sys.executable, "-m", "dvc", "status"],
            cwd=clone / "repo",
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files, size = recorded_outputs(ROOT / "dvc.lock")
        result = {
            "script": "benchmarks/remote_roundtrip.py",
            "outputs_files": files,
            "outputs_mb": round(size / 2**20, 2),
            "push_seconds": round(push, 2),
            "pull_seconds": round(pull, 2),
            "push_mb_per_s": round(size / 2**20 / push, 2),
            "pull_mb_per_s": round(size / 2**20 / pull, 2),
            "clone_status_clean": "up to date" in status,
        }
    finally:
        subprocess.run(
            [sys.executable, "-m", "dvc", "remote", "remove", "--local", REMOTE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(clone, ignore_errors=True)
        procs = (
            [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            if server.poll() is None
            else []
        )
        for proc in procs:
            proc.terminate()
        psutil.wait_procs(procs, timeout=10)
        server.wait(timeout=10)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
