"""The world check per synthetic preset: does the 84x56 view hide the text in each drawing?

    python benchmarks/world_check_presets.py [--videos 40] [--out benchmarks/results/world_check_presets.json]

Generates `--videos` videos of each world into a temporary folder with the project's generator
(params.yaml otherwise) and runs `videor4.data.world_check` on each.  Worlds: the presets
`readable` and `legacy`, and two candidate readable worlds whose ink does not name the digit,
drawn by swapping `synthetic.DIGIT_COLOURS` for this process only (synthetic.py is unchanged):
`readable_mono_ink` (every digit in the panel's dark ink) and `readable_random_ink` (each glyph
in a palette colour drawn at random, independent of the digit).  The decoder always assumes the
real digit palette, so in the candidate worlds it shows what a colour shortcut is worth there.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "benchmarks/world_check_presets.py"


class _RandomInk(dict):
    """A stand-in for DIGIT_COLOURS whose `get` gives a palette colour chosen at random each call."""

    def __init__(self, colours: list[tuple[int, int, int]], seed: int):
        super().__init__()
        self.colours, self.rng = colours, np.random.default_rng(seed)

    def get(self, key, default=None):  # noqa: ANN001 - dict's signature
        return self.colours[int(self.rng.integers(len(self.colours)))]


@contextlib.contextmanager
def _ink(world: str) -> Iterator[None]:
    """Draw digits with another ink for the duration (one process: workers=1)."""
    from videor4.data import synthetic

    real = synthetic.DIGIT_COLOURS
    if world == "readable_mono_ink":
        synthetic.DIGIT_COLOURS = {}  # .get(ch, DARK_TEXT): every digit dark
    elif world == "readable_random_ink":
        synthetic.DIGIT_COLOURS = _RandomInk(list(real.values()), seed=0)
    try:
        yield
    finally:
        synthetic.DIGIT_COLOURS = real


def run_world(world: str, params: dict, work: Path) -> dict:
    from videor4.data.build import make_synthetic_source
    from videor4.data.synthetic import synthetic_config
    from videor4.data.world_check import world_check, world_check_config
    from videor4.rumination.tools import vision_config

    preset = "legacy" if world == "legacy" else "readable"
    cfg = synthetic_config({**params, "synthetic": {**params["synthetic"], "preset": preset, "workers": 1}})
    t0 = time.perf_counter()
    with _ink(world):
        make_synthetic_source(work / world, cfg)
    generate_seconds = round(time.perf_counter() - t0, 1)
    metrics = world_check(work / world, vision_config(params), cfg.style, world_check_config(params))
    return {"preset": preset, "generate_seconds": generate_seconds, **metrics}


def _headline(name: str, m: dict) -> str:
    def pct(e: dict | None) -> str:
        return "  n/a " if e is None else f"{100 * e['acc']:5.1f}%"

    grey, colour, crop = (
        m[k] for k in ("lowres_probe_acc_grey", "lowres_probe_acc_colour", "crop_probe_acc_grey")
    )
    return (
        f"{name:22s} decoder {pct(m['lowres_colour_decoder_acc'])}  "
        f"probe grey {pct(grey['text'])} (glyph {pct(grey['glyph'])})  colour {pct(colour['text'])}  "
        f"crop grey {pct(crop['text'])}  n_test {m['n_texts']['test']}"
    )


def measure_worlds(
    names: list[str],
    run_one: Callable[[str, dict, Path], dict],
    headline: Callable[[str, dict], str],
    videos: int,
    out: Path,
    results_key: str,
    script: str,
) -> None:
    """`run_one(name, params, scratch folder)` for each world, with params.yaml at `videos` videos;
    prints each world's headline and writes every result, naming the script, to `out`."""
    sys.path.insert(0, str(ROOT / "src"))
    from videor4.core.io import write_json

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"]["n_videos"] = videos
    work = Path(tempfile.mkdtemp(prefix="videor4-worlds-"))
    results = {}
    try:
        for name in names:
            results[name] = run_one(name, params, work)
            print(headline(name, results[name]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    document = {"script": script, "n_videos": videos, "world_check": params.get("world_check")}
    write_json(out, {**document, results_key: results})
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument(
        "--worlds", nargs="+", default=["readable", "legacy", "readable_mono_ink", "readable_random_ink"]
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/world_check_presets.json")
    args = ap.parse_args()
    measure_worlds(args.worlds, run_world, _headline, args.videos, args.out, "worlds", SCRIPT)


if __name__ == "__main__":
    main()
