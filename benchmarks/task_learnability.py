"""Does the tiny model learn a perception task in a world, and how fast: the task alone, from the
base, with the pretrain stage's own recipe, for a world given as params changes (issue 28's hidden
world).

    python benchmarks/task_learnability.py NAME [--task read|locate] [--set KEY=VALUE ...]
        [--steps 3000] [--held-out 100] [--kernels native|avx2|params]
        [--out benchmarks/results/task_learnability.json]

Runs the pretrain stage's script (`stages/pretrain.py`) from `models/base` in a scratch folder with
params.yaml as committed except: the task mix is `--task` alone (no first phase), `--steps` steps
and `--held-out` renders per held-out metric, the kernels, and the `--set` changes (dotted keys as
`dvc exp run -S` takes them, values read as YAML).  The stage's cosine schedule spans `--steps`.
Writes, under `runs.NAME` in `--out` (other runs kept), the changes, the seconds, the task's held-out
metrics (READ: exact with its Wilson 95 % interval and the share of digits read in place; LOCATE:
cover and tight cover) and the training losses every 300 steps: reading here comes after a
plateau (the answer loss flat, then falling), so a short run cannot tell a world that is never
learnt from one that is learnt late.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_kernels import run_pretrain_stage  # noqa: E402  (the stage's script in a scratch folder)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "benchmarks/task_learnability.py"
CURVE_KEYS = ("loss", "glyph_loss", "slot_loss", "coord_loss", "continuation_loss", "mean_token_accuracy")
METRICS = {"read": ("read_acc",), "locate": ("locate_cover", "locate_tight_cover")}
READING = re.compile(r'It reads "([^"]*)"')


def parse_changes(pairs: list[str]) -> dict[str, object]:
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        changes[key] = yaml.safe_load(value)
    return changes


def scratch_params(
    task: str, changes: dict[str, object], steps: int, held_out: int, kernels: str, work: Path
) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--set {key}: params.yaml has no section {part!r}")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--set {key}: params.yaml has no key {leaf!r} there")
        node[leaf] = value
    params["pretrain"].update(
        tasks={task: 1.0}, first_tasks={}, first_share=0.0, tiny_steps=steps, held_out=held_out
    )
    params["pretrain"]["save_steps"] = 10 * steps  # no checkpoint but the last
    if kernels != "params":
        params["runtime"] = {"cpu_kernels": kernels}
    params["tracking"] = {**params.get("tracking", {}), "uri": f"sqlite:///{work / 'mlflow.db'}"}
    return params


def digits_in_place(rows: list[dict]) -> float:
    """Share of the asked texts' characters that the reading has at the same place."""
    right = total = 0
    for row in rows:
        match = READING.search(row["predicted"])
        reading = match.group(1) if match else ""
        total += len(row["answer"])
        right += sum(i < len(reading) and reading[i] == ch for i, ch in enumerate(row["answer"]))
    return right / max(1, total)


def losses_every(curve: list[dict], every: int = 300) -> list[dict]:
    return [
        {"step": r["step"], **{k: round(r[k], 4) for k in CURVE_KEYS if k in r}}
        for r in curve
        if "loss" in r and r.get("step", 0) % every == 0
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="what to file the result under in --out")
    ap.add_argument("--task", choices=tuple(METRICS), default="read")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--kernels", choices=("native", "avx2", "params"), default="native")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/task_learnability.json")
    args = ap.parse_args()
    base = ROOT / "models/base"
    if not base.is_dir():
        raise SystemExit(f"{base} is missing: run `dvc repro base_model` first")
    changes = parse_changes(args.changes)
    with tempfile.TemporaryDirectory(prefix="videor4-task-learnability-") as tmp:
        work = Path(tmp)
        params = scratch_params(args.task, changes, args.steps, args.held_out, args.kernels, work)
        seconds = run_pretrain_stage(params, base, work, args.name)
        rows = [json.loads(line) for line in (work / "held_out.jsonl").read_text().splitlines()]
        metrics = json.loads((work / "metrics.json").read_text())
        curve = json.loads((work / "curve.json").read_text())
    result = {"task": args.task, "changes": changes, "steps": args.steps, "kernels": args.kernels}
    result["seconds"] = round(seconds, 1)
    for key in METRICS[args.task]:
        low, high = metrics[f"{key}_ci95"]
        result[key] = {"value": metrics[key], "ci": [low, high], "n": metrics["held_out"]}
    if args.task == "read":
        result["digits_in_place"] = round(digits_in_place([r for r in rows if r["task"] == "read"]), 4)
    result["losses"] = losses_every(curve)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("runs", {})[args.name] = result
    results["script"] = SCRIPT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps({args.name: {k: v for k, v in result.items() if k != "losses"}}, indent=2))


if __name__ == "__main__":
    main()
