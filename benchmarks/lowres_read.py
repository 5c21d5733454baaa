"""What a trained reader gets from the low-resolution first look: READ taught on the frame as the
policy first sees it, with crop READ's recipe and step budget (issue 28's `read_lowres_trained_acc`).

    python benchmarks/lowres_read.py [--base models/base] [--reference metrics/pretrain.json]
        [--kernels params|native|avx2] [--steps N] [--out benchmarks/results/lowres_read.json]

Runs the pretrain stage's own script (`stages/pretrain.py`) from `--base` with params.yaml as
committed except one thing: in both task mixes, READ on the crop is replaced by READ on the
low-resolution frame (`read_lowres`, same weight), so the steps, schedule, learning rate, dense
labels (glyph and slot labels on the first look's grid of merged tokens, where it has cells for
them), the attention and continuation losses are crop READ's.  LOCATE stays, as it shares the
budget with READ in the stage.  The held-out `read_lowres_acc` of this run is the trained low-res
reader; `--reference` (the stage's own metrics) gives crop READ at the same budget and the
untrained low-res figure beside it.  `--kernels native` trades the pinned bytes for speed: the
recipe is the same, the numbers differ in rounding only.  `--steps` (with a small held-out set)
is for a smoke run of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from cpu_kernels import run_pretrain_stage  # benchmarks/: the pretrain stage's script in a scratch folder

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("read_acc", "read_lowres_acc", "locate_cover", "read_clip_acc")


def lowres_mix(mix: dict[str, float]) -> dict[str, float]:
    """The mix with crop READ's weight moved to low-res READ (a mix without READ is left as it is)."""
    out = {k: v for k, v in mix.items() if k != "read"}
    if "read" in mix:
        out["read_lowres"] = out.get("read_lowres", 0.0) + mix["read"]
    return out


def scratch_params(work: Path, kernels: str, steps: int | None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    pretrain = params["pretrain"]
    pretrain["tasks"] = lowres_mix(pretrain["tasks"])
    pretrain["first_tasks"] = lowres_mix(pretrain.get("first_tasks") or {})
    if steps is not None:
        pretrain.update(tiny_steps=steps, held_out=8, save_steps=10 * steps)
    if kernels != "params":
        params["runtime"] = {"cpu_kernels": kernels}
    params["tracking"] = {**params.get("tracking", {}), "uri": f"sqlite:///{work / 'mlflow.db'}"}
    return params


def run(base: Path, work: Path, kernels: str, steps: int | None) -> tuple[dict, float]:
    seconds = run_pretrain_stage(scratch_params(work, kernels, steps), base, work, "read_lowres")
    return json.loads((work / "metrics.json").read_text()), seconds


def cell(metrics: dict, key: str) -> dict | None:
    """{value, ci, n} of one held-out metric (None when the run did not score it)."""
    if key not in metrics:
        return None
    ci = metrics.get(f"{key}_ci95")
    return {"value": metrics[key], "ci": ci, "n": metrics.get("held_out")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, default=ROOT / "models/base")
    ap.add_argument("--reference", type=Path, default=ROOT / "metrics/pretrain.json")
    ap.add_argument("--kernels", choices=("params", "native", "avx2"), default="params")
    ap.add_argument("--steps", type=int, help="a smoke run: this many steps, 8 held-out renders")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/lowres_read.json")
    args = ap.parse_args()
    if not args.base.is_dir():
        raise SystemExit(f"{args.base} is missing: run `dvc repro base_model` first")
    with tempfile.TemporaryDirectory(prefix="videor4-lowres-read-") as tmp:
        trained, seconds = run(args.base, Path(tmp), args.kernels, args.steps)
    reference = json.loads(args.reference.read_text()) if args.reference.is_file() else {}
    preset = yaml.safe_load((ROOT / "params.yaml").read_text())["synthetic"]["preset"]
    result = {
        "script": "benchmarks/lowres_read.py",
        "preset": preset,
        "kernels": args.kernels,
        "steps": trained.get("steps"),
        "seconds": round(seconds, 1),
        "read_lowres_trained_acc": cell(trained, "read_lowres_acc"),
        "locate_cover_with_lowres_read": cell(trained, "locate_cover"),
        "stage": {key: cell(reference, key) for key in KEYS},  # crop READ at the same budget
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
