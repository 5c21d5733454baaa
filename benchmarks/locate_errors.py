"""Where LOCATE's boxes go wrong: at another text, or at the asked one but not close enough.

    python benchmarks/locate_errors.py NAME REPORT [--set KEY=VALUE ...] [--out FILE]

REPORT is a held-out report of pretraining (`reports/pretrain_held_out.jsonl`, or a
`task_learnability.py --keep-held-out` file) made in the world that params.yaml and the `--set`
changes give (the same changes as that run's). Each LOCATE row's scene is drawn again from its
index, and its box is filed under one of:

- `covers`: the crop of the box (widened by the crop margin) covers the asked text, as
  `locate_cover` counts it;
- `at_another_text`: the box's centre is nearest some other text of the scene;
- `near_miss`: nearest the asked text, but the crop does not cover it;
- `no_box`: no well-formed box.

For boxes nearest the asked text it gives each side's error in pixels of the low-resolution view
the model was shown (median and mean), beside the margin in the same pixels, and how often the
panel was named right, and the preset's drawing (`style`) it was measured with. The result is filed
under NAME in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from videor4.core.io import read_jsonl
from videor4.core.statistics import wilson
from videor4.data.evidence import crop_covers
from videor4.data.perception import HELD_OUT_STREAM, example_scene
from videor4.data.synthetic import SceneText, synthetic_config
from videor4.rumination.protocol import box_text, outward_box, phrase_box, phrase_thing
from videor4.rumination.tools import vision_config
from videor4.rumination.video import smart_resize
from videor4.train.pretrain import pretrain_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from task_learnability import changed_params, parse_changes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("covers", "at_another_text", "near_miss", "no_box")


def centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def nearest_text(box: list[float], texts: list[SceneText], width: int, height: int) -> SceneText:
    """The text whose box centre is nearest the box's, in the view's pixels."""
    cx, cy = centre(box)

    def distance(text: SceneText) -> float:
        tx, ty = centre(list(text.box))
        return float(np.hypot((tx - cx) * width, (ty - cy) * height))

    return min(texts, key=distance)


def classify(rows: list[dict], params: dict) -> dict:
    world, vision = synthetic_config(params), vision_config(params)
    seed = pretrain_settings(params).seed
    # the low-resolution frame LOCATE is shown: every scene is drawn at the world's size
    height, width = smart_resize(
        world.height, world.width, vision.factor, vision.frame_min_pixels, vision.frame_max_pixels
    )
    view = width, height
    counts = dict.fromkeys(KINDS, 0)
    named_right, errors = 0, []
    for row in rows:
        scene, target, _ = example_scene("locate", world, seed, HELD_OUT_STREAM, row["index"])
        if box_text(outward_box(target.box, vision.box_step)) != row["answer"]:
            raise SystemExit(f"row {row['index']}: its box is not this world's (--set as the run's)")
        box = phrase_box(row["predicted"])
        named_right += phrase_thing(row["predicted"]) == target.panel
        if box is None:
            counts["no_box"] += 1
            continue
        at_target = nearest_text(box, scene.texts, *view) is target
        if crop_covers(box, target.box, vision.crop_margin):
            counts["covers"] += 1
        elif not at_target:
            counts["at_another_text"] += 1
        else:
            counts["near_miss"] += 1
        if at_target:
            sizes = (width, height, width, height)
            errors.append([(box[k] - target.box[k]) * sizes[k] for k in range(4)])
    n = len(rows)
    style = asdict(world.style)
    style["fonts"] = [Path(font).stem for font in style["fonts"]]
    result: dict = {
        "n": n,
        "view": list(view),
        "named_right": named_right / n if n else None,
        "style": style,  # how the preset drew its panels when this was measured
    }
    for kind, count in counts.items():
        estimate = wilson(count, n)
        result[kind] = {"count": count, "share": count / n, "ci": [estimate.low, estimate.high]}
    if errors:
        sides = np.abs(np.array(errors))
        result["side_error_view_px"] = {
            "sides": ["left", "top", "right", "bottom"],
            "median": np.median(sides, axis=0).round(2).tolist(),
            "mean": sides.mean(axis=0).round(2).tolist(),
            "n": len(errors),
        }
        result["margin_view_px"] = [vision.crop_margin * view[0], vision.crop_margin * view[1]]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="what to file the result under in --out")
    ap.add_argument("report", type=Path, help="a held-out report with LOCATE rows")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/locate_errors.json")
    args = ap.parse_args()
    changes = parse_changes(args.changes)
    rows = [row for row in read_jsonl(args.report) if row["task"] == "locate"]
    if not rows:
        raise SystemExit(f"{args.report}: no LOCATE rows")
    result = {"report": str(args.report), "changes": changes, **classify(rows, changed_params(changes))}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.name] = result
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
