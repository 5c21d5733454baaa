"""The paper's data recipe on the embedded default: detection evidence and model-written thoughts.

    python benchmarks/data_recipe.py [--writer models/drp_sft] [--out benchmarks/records/data_recipe.json]

Builds the datasets from this repository's `data/synthetic` with `params.yaml` as it is, into a
temporary folder (never `data/built`), four ways, and reports each build's evidence origins, QC
drops, detector agreement, thought counts and seconds:

- `default`: the params as they are (templates, no detector);
- `detection`: `data.detection.model: tiny` on the OCR'd videos.  OCR finds every answer text in
  the embedded world, so the detector is asked only for the agreement measurement;
- `detection_fallback`: the same with `data.ocr.min_anls` above 1, so that no OCR reading
  matches and every OCR'd sample is grounded by the detector instead: the fallback path, end to
  end, with QC judging the result against the generator's ground truth;
- `writer`: `data.cot.writer: model` with `--writer` (default: the pipeline's DRP-SFT policy) as
  the writer, greedy, a fresh cache: what writing every thought costs on this CPU, and how many
  written thoughts pass the checks.

The tiny detector is random (no checkpoint can be downloaded here), so its agreement with the
ground truth measures nothing about detection: it shows the path runs and what QC does with it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def build(params: dict, out: Path, cache: Path) -> dict:
    from videor4.data.build import build_config, build_datasets, data_params, load_source, validate_dataset
    from videor4.policy.writer import thought_writer

    data = data_params(params)
    cfg = build_config(params, out)
    cfg.ocr_cache_dir = ROOT / ".cache/ocr"  # OCR is not what is measured: reuse the pipeline's cache
    writer = thought_writer(data, cfg.cot)
    t = time.perf_counter()
    metrics = build_datasets(
        load_source(data, ROOT / "data/synthetic"), cfg, validate=validate_dataset, writer=writer
    )
    metrics["wall_seconds"] = round(time.perf_counter() - t, 1)
    if writer is not None:
        metrics["writer_generate_calls"] = writer.calls
        metrics["writer_prompts_generated"] = writer.generated
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--writer", default="models/drp_sft", help="the writer model (a checkpoint folder or Hub id)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/records/data_recipe.json")
    ap.add_argument("--only", nargs="*", default=None, help="run only these variants")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    work = Path(tempfile.mkdtemp(prefix="videor4-recipe-"))
    variants = {
        "default": {},
        "detection": {"detection": {"model": "tiny", "cache_dir": str(work / "det")}},
        "detection_fallback": {
            "detection": {"model": "tiny", "cache_dir": str(work / "det")},
            "ocr": {"min_anls": 1.01},
        },
        "writer": {
            "cot": {
                "writer": "model",
                "model": str(ROOT / args.writer) if (ROOT / args.writer).exists() else args.writer,
                "cache_dir": str(work / "cot"),
            }
        },
    }
    results = {}
    for name, change in variants.items():
        if args.only and name not in args.only:
            continue
        params = copy.deepcopy(base)
        for section, values in change.items():
            params["data"][section] = {**params["data"].get(section, {}), **values}
        params["data"]["review"]["decisions"] = None  # the build as synthesized, before people look
        metrics = build(params, work / name, work)
        keep = (
            "evidence_origin",
            "dropped",
            "n_drp",
            "n_crp",
            "n_samples_train",
            "detection_gt_boxes",
            "detection_gt_iou50",
            "detection_gt_cover",
            "thoughts",
            "writer_generate_calls",
            "writer_prompts_generated",
            "seconds",
            "wall_seconds",
        )
        results[name] = {k: metrics[k] for k in keep if k in metrics}
        print(name, json.dumps(results[name]), flush=True)
    if "writer" in results and "default" in results:
        results["writer_extra_seconds"] = round(
            results["writer"]["wall_seconds"] - results["default"]["wall_seconds"], 1
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "script": "benchmarks/data_recipe.py",
                "params": "params.yaml",
                "writer": args.writer,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
