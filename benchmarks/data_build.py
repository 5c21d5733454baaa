"""Data-build throughput and the frame-cache effect, on this machine.

    python benchmarks/data_build.py [--videos 24] [--ocr-videos 4] [--out /tmp/videor4-bench]

Reports:
- video generation (videos/s), build without OCR and with OCR (videos/s);
- the frame cache: G=8 rollouts' worth of frame loads over each video, with the
  shared cache (decode once) vs without (decode every time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--ocr-videos", type=int, default=4)
    ap.add_argument("--group", type=int, default=8, help="rollouts per prompt (G)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from videor4.data.build import build_config, build_datasets, load_synthetic_source, make_synthetic_source
    from videor4.data.synthetic import synthetic_config
    from videor4.rumination.video import FRAME_CACHE, FrameCache, load_frames

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"]["n_videos"] = args.videos
    work = args.out or Path(tempfile.mkdtemp(prefix="videor4-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    results: dict[str, float] = {}

    t = time.perf_counter()
    make_synthetic_source(work / "synthetic", synthetic_config(params))
    results["generate_videos_per_s"] = args.videos / (time.perf_counter() - t)
    source = load_synthetic_source(work / "synthetic")

    for label, n_ocr in (("no_ocr", 0), ("ocr", args.ocr_videos)):
        params["data"]["ocr"]["max_videos"] = n_ocr
        cfg = build_config(params, work / f"built-{label}")
        cfg.ocr_cache_dir = None  # measure real OCR, not the cache
        FRAME_CACHE.clear()
        t = time.perf_counter()
        m = build_datasets(source, cfg)
        dt = time.perf_counter() - t
        results[f"build_{label}_seconds"] = dt
        results[f"build_{label}_videos_per_s"] = m["n_videos"] / dt
        results[f"build_{label}_trajectories"] = m["n_drp"] + m["n_crp"]
        if n_ocr:
            results["ocr_videos"] = m["ocr_videos"]
            results["ocr_gt_agreement"] = m["ocr_gt_agreement"]

    videos = sorted({s.video for s in source.samples})
    for label, cache_factory in (("cached", FrameCache), ("uncached", lambda: None)):
        cache = cache_factory()
        t = time.perf_counter()
        for v in videos:
            for _ in range(args.group):
                load_frames(v, num_frames=8, cache=cache)
        results[f"frame_loads_{label}_seconds"] = time.perf_counter() - t
    results["frame_cache_speedup"] = (
        results["frame_loads_uncached_seconds"] / results["frame_loads_cached_seconds"]
    )

    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
