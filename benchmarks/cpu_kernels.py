"""What `runtime.cpu_kernels` does on this machine: is the pin in force, do pinned runs agree, and
what does it cost in time against the native kernels.

    python benchmarks/cpu_kernels.py [--steps 60] [--repeats 2] [--out benchmarks/results/cpu_kernels.json]

Runs the pretrain stage's own script (`stages/pretrain.py`, the stage runner sets the kernels
from `runtime.cpu_kernels` before torch loads) from this repository's `models/base` for a few
steps, `--repeats` times with `native` and with `avx2`, each in a scratch folder with params.yaml
as committed except the steps, the held-out size and the kernel level, and its own MLflow store.
Reports each run's wall time, the md5 of its weights and the kernels its MLflow run recorded.
Run it after `dvc repro` (models/base), with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("native", "avx2")


def scratch_params(level: str, steps: int, work: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"] = {"cpu_kernels": level}
    params["pretrain"].update(tiny_steps=steps, held_out=8, save_steps=10 * steps)
    params["tracking"] = {**params.get("tracking", {}), "uri": f"sqlite:///{work / 'mlflow.db'}"}
    return params


def run_pretrain_stage(params: dict, base: Path, work: Path, label: str) -> float:
    """Seconds of one run of the pretrain stage's own script from `base` with `params`, in `work`
    (its params.yaml, dvc.yaml, outputs under work/pretrain and work/metrics.json); a failure ends
    the benchmark with the stage's last line (its stderr's tail first)."""
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [sys.executable, str(ROOT / "stages/pretrain.py"), "pretrain", "--init", str(base)]
    cmd += ["--out", str(work / "pretrain"), "--metrics", str(work / "metrics.json")]
    cmd += ["--curve", str(work / "curve.json"), "--held-out-report", str(work / "held_out.jsonl")]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"pretrain ({label}) failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


def run_stage(level: str, steps: int, work: Path) -> dict:
    work.mkdir(parents=True)
    seconds = run_pretrain_stage(scratch_params(level, steps, work), ROOT / "models/base", work, level)
    out = work / "pretrain"
    return {
        "level": level,
        "seconds": round(seconds, 1),
        "md5": hashlib.md5((out / "model.safetensors").read_bytes()).hexdigest(),
        "kernels": recorded_kernels(work),
    }


def recorded_kernels(work: Path) -> dict[str, str]:
    """The kernel tags the stage's MLflow run carries (what lineage says it ran on)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    tags = next(r.data.tags for r in runs if r.data.tags.get("dvc.stage") == "pretrain")
    return {k: v for k, v in sorted(tags.items()) if k.startswith(("env.cpu.", "env.torch.", "env.kernels."))}


def summary(rows: list[dict]) -> dict:
    by_level = {level: [r for r in rows if r["level"] == level] for level in LEVELS}
    md5s = {level: {r["md5"] for r in runs} for level, runs in by_level.items()}
    mean = {level: round(sum(r["seconds"] for r in runs) / len(runs), 1) for level, runs in by_level.items()}
    return {
        "native_runs_agree": len(md5s["native"]) == 1,
        "pinned_runs_agree": len(md5s["avx2"]) == 1,
        "pin_changes_bytes": not md5s["native"] & md5s["avx2"],
        "mean_seconds": mean,
        "pinned_over_native": round(mean["avx2"] / mean["native"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu_kernels.json")
    args = ap.parse_args()
    if not (ROOT / "models/base").is_dir():
        raise SystemExit("models/base is missing: run `dvc repro base_model` first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for level in LEVELS:  # interleaved, so a slow spell of the machine hits both
                rows.append(run_stage(level, args.steps, Path(tmp) / f"{level}-{repeat}"))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "kernels"}), flush=True)
    result = {"script": "benchmarks/cpu_kernels.py", "steps": args.steps, "runs": rows, **summary(rows)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
