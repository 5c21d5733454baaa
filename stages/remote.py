"""The DVC remote on S3: configure it from params / environment, check it, push and pull.

    python stages/remote.py configure [--local]   # writes the remote into .dvc/config (or config.local)
    python stages/remote.py check                  # can we reach, read and write the bucket?
    python stages/remote.py push [TARGETS...]      # check, then `dvc push`
    python stages/remote.py pull [TARGETS...]      # check, then `dvc pull`

Not a pipeline stage: the DVC-aware side of `videor4.storage`.  The bucket, prefix and
endpoint come from params.yaml's `storage:` section or $VIDEOR4_S3_BUCKET,
$VIDEOR4_S3_PREFIX and $AWS_ENDPOINT_URL(_S3); credentials only from the AWS
environment or profile, which this never writes anywhere.  A storage problem ends with
one `error:` line naming what failed, before any data moves; a failed push changes
nothing in the workspace or the cache.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.common import fail, load_params  # noqa: E402


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
    print(f"DVC remote {settings.dvc_remote!r} -> {settings.dvc_url} ({settings.endpoint_name}), written to {where}")


def transfer(command: str, settings, targets: list[str]) -> None:
    """`dvc push` / `dvc pull` against the configured remote, after checking it can work."""
    from videor4.storage import StorageError, check

    try:
        check(settings, write=command == "push")
    except StorageError as exc:
        fail(command, f"{exc}; nothing was transferred")
    done = _dvc(command, "--remote", settings.dvc_remote, *targets, capture=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        kept = "the workspace and the local cache are unchanged" if command == "push" else "files already in the workspace are unchanged"
        fail(command, f"dvc {command} to {settings.dvc_url} failed: {_first_error(done.stderr)} ({kept}; run it again to resume)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("configure", help="write the DVC remote from params / environment")
    conf.add_argument("--local", action="store_true", help="write to .dvc/config.local (not committed)")
    sub.add_parser("check", help="check the bucket can be reached, read and written")
    for name in ("push", "pull"):
        sub.add_parser(name, help=f"check, then dvc {name}").add_argument("targets", nargs="*")
    args = parser.parse_args()

    from videor4.storage import StorageError, check, s3_settings

    try:
        settings = s3_settings(load_params())
        settings.require()
    except (ValueError, StorageError) as exc:
        fail("remote", exc)
    if args.command == "configure":
        configure(settings, args.local)
    elif args.command == "check":
        try:
            check(settings, write=True)
        except StorageError as exc:
            fail("remote", exc)
        print(f"ok: {settings.url()} at {settings.endpoint_name} can be listed and written")
    else:
        transfer(args.command, settings, args.targets)


if __name__ == "__main__":
    main()
