"""SFT throughput (tokens/s) and peak memory for the configured policy, on this machine.

    python benchmarks/sft_throughput.py [--init models/base] [--data data/built/sft_drp.jsonl] [--epochs 1]

Runs the real DRP-SFT code path (TRL SFTTrainer, on-the-fly encoding, the
params.yaml settings of sft.drp) for the given number of epochs and reports
trained tokens per second, steps per second, and peak memory: resident set size
of the process on CPU, and the CUDA allocator's peak on a GPU.  Needs the
base_model stage's output (`dvc repro base_model`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", type=Path, default=ROOT / "models/base")
    ap.add_argument("--data", type=Path, default=ROOT / "data/built/sft_drp.jsonl")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()

    import torch

    from videor4.policy.model import model_config
    from videor4.train.sft import sft_settings

    if not args.init.exists():
        sys.exit(f"{args.init} does not exist: run `dvc repro base_model` first")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = sft_settings(params, "drp")
    settings.epochs = args.epochs
    settings.save_steps = 10**9  # measure training, not checkpoint writing
    if args.batch_size:
        settings.batch_size = args.batch_size

    from videor4.train.sft import train_sft

    with tempfile.TemporaryDirectory(prefix="videor4-sft-bench-") as tmp:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        metrics, _ = train_sft(
            args.data, args.init, Path(tmp) / "out", Path(tmp) / "work", model_config(params), settings
        )
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "parameters": metrics["parameters"],
        "trajectories": metrics["trajectories"],
        "batch_size": settings.batch_size,
        "steps": metrics["steps"],
        "train_seconds": round(metrics["train_seconds"], 2),
        "steps_per_second": round(metrics["steps"] / metrics["train_seconds"], 3),
        "tokens_per_second": round(metrics["train_tokens_per_second"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if torch.cuda.is_available()
        else None,
        "bf16": metrics["bf16"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
