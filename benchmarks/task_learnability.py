"""Does the tiny model learn a perception task in a world, and how fast: the task alone, from the
base, with the pretrain stage's own recipe, for a world given as params changes (issue 28's hidden
world).

    python benchmarks/task_learnability.py NAME [--task read|locate|recipe] [--set KEY=VALUE ...]
        [--first read|locate --first-share 0.25] [--steps 3000] [--held-out 100]
        [--kernels native|avx2|params] [--untie-lm-head] [--keep-model DIR]
        [--keep-held-out FILE] [--pair-with REPORT]
        [--out benchmarks/results/task_learnability.json]

Runs the pretrain stage's script (`stages/pretrain.py`) from `models/base` in a scratch folder with
params.yaml as committed except: the task mix is `--task` alone (with `--first`, that task alone for
the first `--first-share` of the steps, as the stage's `first_tasks` phase; `recipe`: the stage's own
mix and first phase, as params.yaml and the `--set` changes give them), `--steps` steps
and `--held-out` renders per held-out metric, the kernels, and the `--set` changes (dotted keys as
`dvc exp run -S` takes them, values read as YAML).  The stage's cosine schedule spans `--steps`.
Writes, under `runs.NAME` in `--out` (other runs kept), the changes, the seconds, the task's held-out
metrics of both tasks trained (READ: exact with its Wilson 95 % interval and the share of digits read
in place; LOCATE: cover and tight cover) and the training losses every 300 steps: reading here comes
after a plateau (the answer loss flat, then falling), so a short run cannot tell a world that is
never learnt from one that is learnt late.  READ also gets `read_answer_acc`, the share whose final
`\\boxed{}` answer is the text (a right reading can be copied wrong into it).  `--pair-with` a
held-out report of the same renders (the pipeline's reports/pretrain_held_out.jsonl, or another
run's `--keep-held-out`, at the same `--held-out` and seed) adds, for each READ metric, this run
minus that one question by question: the paired bootstrap CI and sign-flip p.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from videor4.core.io import read_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_kernels import run_pretrain_stage  # noqa: E402  (the stage's script in a scratch folder)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "benchmarks/task_learnability.py"
CURVE_KEYS = (
    "loss",
    "glyph_loss",
    "slot_loss",
    "coord_loss",
    "attention_loss",
    "continuation_loss",
    "mean_token_accuracy",
)
METRICS = {"read": ("read_acc",), "locate": ("locate_cover", "locate_tight_cover")}
RECIPE = "recipe"  # --task: the stage's own mix
READING = re.compile(r'It reads "([^"]*)"')


def parse_changes(pairs: list[str]) -> dict[str, object]:
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        changes[key] = yaml.safe_load(value)
    return changes


def changed_params(changes: dict[str, object]) -> dict:
    """params.yaml with the `--set` changes; a key params.yaml lacks is an error naming it."""
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
    return params


def scratch_params(
    task: str,
    changes: dict[str, object],
    steps: int,
    held_out: int,
    kernels: str,
    work: Path,
    first: str | None = None,
    first_share: float = 0.0,
) -> dict:
    params = changed_params(changes)
    if task != RECIPE:
        params["pretrain"].update(
            tasks={task: 1.0},
            first_tasks={first: 1.0} if first else {},
            first_share=first_share if first else 0.0,
        )
    params["pretrain"].update(tiny_steps=steps, held_out=held_out)
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


def answer_correct(rows: list[dict]) -> list[bool]:
    """Per READ row: is the final boxed answer the asked text (what a policy built on it would answer)."""
    from videor4.train.pretrain import boxed_answer_right

    return [boxed_answer_right(row["predicted"], row["answer"]) for row in rows]


def read_scores(rows: list[dict]) -> dict[str, dict[int, bool]]:
    """READ's per-render scores by index: the reading (the stage's `correct`) and the boxed answer."""
    read = [r for r in rows if r["task"] == "read"]
    return {
        "read_acc": {r["index"]: bool(r["correct"]) for r in read},
        "read_answer_acc": dict(zip((r["index"] for r in read), answer_correct(read))),
    }


def paired_with(rows: list[dict], report: Path) -> dict[str, dict]:
    """This run minus the run behind `report`, on the READ renders both scored (same index, same text)."""
    from videor4.core.statistics import paired_difference

    other_rows = read_jsonl(report)
    answers = {r["index"]: r["answer"] for r in rows if r["task"] == "read"}
    if {r["index"]: r["answer"] for r in other_rows if r["task"] == "read"} != answers:
        raise SystemExit(f"--pair-with {report}: its READ renders are not this run's (--held-out, seed)")
    mine, theirs = read_scores(rows), read_scores(other_rows)
    out: dict[str, dict] = {"report": str(report)}
    for key in mine:
        ids = sorted(mine[key])
        d = paired_difference([mine[key][i] for i in ids], [theirs[key][i] for i in ids])
        out[key] = {
            "this": sum(mine[key].values()) / len(ids),
            "that": sum(theirs[key].values()) / len(ids),
            "difference": round(d.difference, 4),
            "ci": [round(d.low, 4), round(d.high, 4)],
            "p": round(d.p_value, 4),
            "n": d.n,
        }
    return out


def untied_copy(base: Path, out: Path) -> Path:
    """`base` saved again with an LM head of its own, equal to the embeddings it was tied to: the
    same function, but what the output side learns no longer moves the input embeddings."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    for config in (model.config, model.config.get_text_config()):
        config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.safetensors"))
    model.save_pretrained(out)
    return out


def losses_every(curve: list[dict], every: int = 300) -> list[dict]:
    return [
        {"step": r["step"], **{k: round(r[k], 4) for k in CURVE_KEYS if k in r}}
        for r in curve
        if "loss" in r and r.get("step", 0) % every == 0
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="what to file the result under in --out")
    ap.add_argument("--task", choices=(*METRICS, RECIPE), default="read")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--first", choices=tuple(METRICS), default=None, help="a first phase of this task alone")
    ap.add_argument("--first-share", type=float, default=0.25, help="the first phase's share of the steps")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--kernels", choices=("native", "avx2", "params"), default="native")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/task_learnability.json")
    ap.add_argument(
        "--untie-lm-head",
        action="store_true",
        help="train a copy of the base whose LM head is its own (initialised as the tied embeddings)",
    )
    ap.add_argument("--keep-model", type=Path, default=None, help="copy the trained checkpoint here")
    ap.add_argument(
        "--pair-with", type=Path, default=None, help="a held-out report of the same renders to pair READ with"
    )
    ap.add_argument(
        "--keep-held-out",
        type=Path,
        default=None,
        help="copy the held-out predictions (jsonl) here, to pair runs",
    )
    args = ap.parse_args()
    base = ROOT / "models/base"
    if not base.is_dir():
        raise SystemExit(f"{base} is missing: run `dvc repro base_model` first")
    if args.first and args.task == RECIPE:
        ap.error("--first: the recipe has its own first phase (--set pretrain.first_tasks=...)")
    if not 0.0 < args.first_share < 1.0:
        ap.error(f"--first-share {args.first_share}: expected a share strictly between 0 and 1")
    if args.pair_with and not args.pair_with.is_file():
        ap.error(f"--pair-with {args.pair_with}: no such file")
    changes = parse_changes(args.changes)
    with tempfile.TemporaryDirectory(prefix="videor4-task-learnability-") as tmp:
        work = Path(tmp)
        if args.untie_lm_head:
            base = untied_copy(base, work / "base-untied")
        params = scratch_params(
            args.task, changes, args.steps, args.held_out, args.kernels, work, args.first, args.first_share
        )
        seconds = run_pretrain_stage(params, base, work, args.name)
        rows = read_jsonl(work / "held_out.jsonl")
        metrics = json.loads((work / "metrics.json").read_text())
        curve = json.loads((work / "curve.json").read_text())
        if args.keep_model:
            shutil.copytree(work / "pretrain", args.keep_model, dirs_exist_ok=True)
        if args.keep_held_out:
            args.keep_held_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / "held_out.jsonl", args.keep_held_out)
    result = {"task": args.task, "changes": changes, "steps": args.steps, "kernels": args.kernels}
    if args.untie_lm_head:
        result["untied_lm_head"] = True
    if args.first:
        result["first"] = {"task": args.first, "share": args.first_share}
    result["seconds"] = round(seconds, 1)
    tasks = tuple(METRICS) if args.task == RECIPE else (args.task, *([args.first] if args.first else []))
    for key in dict.fromkeys(key for task in tasks for key in METRICS[task]):
        low, high = metrics[f"{key}_ci95"]
        result[key] = {"value": metrics[key], "ci": [low, high], "n": metrics["held_out"]}
    if "read" in tasks:
        read_rows = [r for r in rows if r["task"] == "read"]
        result["digits_in_place"] = round(digits_in_place(read_rows), 4)
        from videor4.core.statistics import wilson

        answered = wilson(sum(answer_correct(read_rows)), len(read_rows))
        result["read_answer_acc"] = {
            "value": answered.value,
            "ci": [answered.low, answered.high],
            "n": answered.n,
        }
        if args.pair_with:
            result["paired_with"] = paired_with(rows, args.pair_with)
    result["losses"] = losses_every(curve)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("runs", {})[args.name] = result
    results["script"] = SCRIPT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps({args.name: {k: v for k, v in result.items() if k != "losses"}}, indent=2))


if __name__ == "__main__":
    main()
