"""Wall time of every stage of a full `dvc repro` from a fresh clone, and of the no-op repro after it.

    python benchmarks/pipeline_timing.py [--fresh-env] [--keep DIR]
        [--out benchmarks/results/pipeline_timing.json]

Clones the committed HEAD of this repository into a temporary folder (no outputs, no DVC
cache, no MLflow store), runs the README's main command there — `make pipeline`, which with
`--fresh-env` also creates the virtualenv and installs everything, otherwise reuses this
checkout's .venv — and stamps each "Running stage" line of DVC's output as it arrives.  A
stage's time runs from its line to the next one (so it includes DVC hashing and caching its
outputs); the last stage ends where `dvc repro` ends.  Then `dvc repro` runs again with
nothing changed.  Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
REPRO_DONE = re.compile(r"^(Updating lock file|Use `dvc push`|To track the changes with git)")


def timed_run(
    cmd: list[str], cwd: Path, env: dict[str, str], log
) -> tuple[float, list[tuple[str, float]], float | None]:
    """(total seconds, [(stage, start offset)], offset where dvc repro finished) of a streamed command."""
    started = time.perf_counter()
    stages: list[tuple[str, float]] = []
    repro_end = None
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - started
        log.write(line)
        if m := STAGE_LINE.match(line):
            stages.append((m.group(1), now))
            print(f"[{now:7.1f} s] {m.group(1)}", file=sys.stderr)
        elif REPRO_DONE.match(line):
            repro_end = now  # the last one: DVC updates the lock file after every stage
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see the log")
    return time.perf_counter() - started, stages, repro_end


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--fresh-env", action="store_true", help="create the virtualenv in the clone too (a fresh machine)"
    )
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--cache-dir", type=Path, help="DVC cache for the clone (default: its own, empty)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pipeline_timing.json")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="videor4-timing-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if args.cache_dir:
        subprocess.run(
            [sys.executable, "-m", "dvc", "cache", "dir", "--local", str(args.cache_dir.resolve())],
            cwd=clone,
            check=True,
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    if not args.fresh_env:  # reuse this checkout's environment: only the pipeline is timed
        (clone / ".venv").symlink_to(ROOT / ".venv")
        (ROOT / ".venv/.installed").touch(
            exist_ok=True
        )  # newer than the clone's pyproject.toml: make installs nothing
        env["PYTHONPATH"] = str(clone / "src")  # the clone's code, not this checkout's editable install
    env["PATH"] = f"{clone / '.venv/bin'}:{env['PATH']}"
    log_path = work / "pipeline.log"
    with open(log_path, "w") as log:
        total, stages, repro_end = timed_run(["make", "pipeline"], clone, env, log)
        noop_total, noop_stages, _ = timed_run([str(clone / ".venv/bin/dvc"), "repro"], clone, env, log)
    if noop_stages:
        raise SystemExit(f"the second dvc repro ran stages: {[s for s, _ in noop_stages]}")
    repro_end = repro_end or total
    rows = []
    for i, (stage, start) in enumerate(stages):
        end = stages[i + 1][1] if i + 1 < len(stages) else repro_end
        rows.append({"stage": stage, "seconds": round(end - start, 1)})
    setup = stages[0][1] if stages else 0.0
    result = {
        "script": "benchmarks/pipeline_timing.py",
        "fresh_env": args.fresh_env,
        "setup_seconds": round(setup, 1),
        "stages": rows,
        "repro_seconds": round(repro_end - setup, 1),
        "make_pipeline_seconds": round(total, 1),
        "noop_repro_seconds": round(noop_total, 1),
        "cpus": os.cpu_count(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
        ).stdout.strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| stage | seconds |\n|---|---:|")
    if args.fresh_env:
        print(f"| set-up (venv, torch, install) | {setup:.0f} |")
    for row in rows:
        print(f"| {row['stage']} | {row['seconds']:.0f} |")
    print(f"| **dvc repro, all stages** | **{result['repro_seconds']:.0f}** |")
    print(f"| **make pipeline, total** | **{total:.0f}** |")
    print(f"| second dvc repro (nothing changed) | {noop_total:.1f} |")
    print(f"log: {log_path}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
