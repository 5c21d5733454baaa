"""Does rendering pretraining's examples in a dataloader worker speed the stage up on this machine?

    python benchmarks/pretrain_workers.py [--steps 150] [--out benchmarks/records/pretrain_workers.json]

Runs `videor4.train.pretrain.pretrain` from `models/base` with the committed params for a few
steps, once with the collator (rendering + encoding) in the main process (the default) and once
in one DataLoader worker, and reports the wall time of each and whether the two checkpoints are
byte-identical.  Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
import time
from pathlib import Path

import yaml

import videor4.train.pretrain as pretrain_module
from videor4.data.synthetic import synthetic_config
from videor4.policy.model import model_config
from videor4.rumination.tools import vision_config

ROOT = Path(__file__).resolve().parent.parent


def run(workers: int, steps: int, work: Path) -> dict:
    shared = pretrain_module.trainer_arguments

    def with_workers(*args, **kwargs):
        return {**shared(*args, **kwargs), "dataloader_num_workers": workers}

    pretrain_module.trainer_arguments = with_workers
    try:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        settings = dataclasses.replace(
            pretrain_module.pretrain_settings(params), steps=steps, save_steps=10 * steps
        )
        out = work / f"workers{workers}"
        started = time.perf_counter()
        metrics, _ = pretrain_module.pretrain(
            ROOT / "models/base",
            out,
            work / f"workers{workers}_work",
            synthetic_config(params),
            vision_config(params),
            model_config(params),
            settings,
        )
        seconds = time.perf_counter() - started
    finally:
        pretrain_module.trainer_arguments = shared
    weights = hashlib.md5((out / "model.safetensors").read_bytes()).hexdigest()
    return {
        "workers": workers,
        "seconds": round(seconds, 1),
        "train_seconds": round(metrics["train_seconds"], 1),
        "md5": weights,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/pretrain_workers.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(workers, args.steps, Path(tmp)) for workers in (0, 1)]
    result = {
        "script": "benchmarks/pretrain_workers.py",
        "steps": args.steps,
        "runs": rows,
        "same_bytes": rows[0]["md5"] == rows[1]["md5"],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(
            f"dataloader workers {row['workers']}: {row['train_seconds']} s training, "
            f"{row['seconds']} s in all, md5 {row['md5']}"
        )
    print(f"same checkpoint bytes: {result['same_bytes']}")


if __name__ == "__main__":
    main()
