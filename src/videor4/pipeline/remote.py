"""The DVC remote on S3: configure it from params / environment, check it, push and pull.

Run as `video-r4 remote configure|check|push|pull` (app.cli).  The bucket, prefix and
endpoint come from params.yaml's `storage:` section or $VIDEOR4_S3_BUCKET,
$VIDEOR4_S3_PREFIX and $AWS_ENDPOINT_URL(_S3); credentials only from the AWS
environment or profile, which this never writes anywhere.  A storage problem ends with
one `error:` line naming what failed, before any data moves; a failed push changes
nothing in the workspace or the cache.
"""

from __future__ import annotations

import subprocess
import sys

from videor4.pipeline.runner import fail
from videor4.pipeline.storage import S3Settings, StorageError, check, s3_settings


def remote_settings(params) -> S3Settings:
    """The S3 settings from params / environment, or one `error:` line if none is configured."""
    try:
        settings = s3_settings(params)
        settings.require()
    except (ValueError, StorageError) as exc:
        fail("remote", exc)
    return settings


def check_remote(settings: S3Settings) -> None:
    try:
        check(settings, write=True)
    except StorageError as exc:
        fail("remote", exc)
    print(f"ok: {settings.url()} at {settings.endpoint_name} can be listed and written")


def _dvc(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], capture_output=capture, text=True, check=False
    )


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln.removeprefix("ERROR:").strip() for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no error output"])[0]


def configure(settings, local: bool) -> None:
    """Point the DVC remote `settings.dvc_remote` at s3://bucket/prefix/dvc and make it the default."""
    scope = ["--local"] if local else []
    steps = [["remote", "add", *scope, "--force", "--default", settings.dvc_remote, settings.dvc_url]]
    for option, value in (("endpointurl", settings.endpoint_url), ("region", settings.region)):
        if value:
            steps.append(["remote", "modify", *scope, settings.dvc_remote, option, value])
    for step in steps:
        done = _dvc(*step, capture=True)
        if done.returncode != 0:
            fail("remote", f"dvc {' '.join(step)} failed: {_first_error(done.stderr)}")
    where = ".dvc/config.local" if local else ".dvc/config"
    print(
        f"DVC remote {settings.dvc_remote!r} -> {settings.dvc_url} ({settings.endpoint_name}), written to "
        f"{where}"
    )


def transfer(command: str, settings, targets: list[str]) -> None:
    """`dvc push` / `dvc pull` against the configured remote, after checking it can work."""
    try:
        check(settings, write=command == "push")
    except StorageError as exc:
        fail(command, f"{exc}; nothing was transferred")
    done = _dvc(command, "--remote", settings.dvc_remote, *targets, capture=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        kept = (
            "the workspace and the local cache are unchanged"
            if command == "push"
            else "files already in the workspace are unchanged"
        )
        fail(
            command,
            f"dvc {command} to {settings.dvc_url} failed: {_first_error(done.stderr)} ({kept}; run it again "
            "to resume)",
        )
