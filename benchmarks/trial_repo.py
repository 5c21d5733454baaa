"""What the trial benchmarks share: their variants run as queued DVC experiments, read back through
DVC, and scored question by question.

- `run_queued`: `dvc exp run --queue -n NAME -S key=value ...` for each variant, `dvc queue start
  -j JOBS`, `dvc queue status` polled until they finish (bounded in time; the workers this call
  started leave by themselves when the queue is empty, or get `dvc queue stop`), and each
  experiment read back from `dvc exp show --json` (its commit, params and metrics).  Queued
  experiments run in DVC's temporary copies under .dvc/tmp/exps, so the workspace is not touched:
  `git status --porcelain` is checked to be the same afterwards.
- `reader`: a `dvc.api.DVCFileSystem` at a revision (an experiment's commit or name, a git
  revision, or None for the workspace; a name that experiments from several commits share is
  refused, naming their commits), through which every report is read, never through the
  cache's layout; `predictions` / `question_kinds` read the eval stage's per-question reports
  (reports/eval) and the split's question kinds with it.
- Trials are scored on the val split: every variant is queued with `-S eval.split=val` (`on_split`;
  `--split test` for the other), so its eval stage scores data/built/samples_val.jsonl, and
  metrics/eval.json records the split it scored ("split"), which `predictions` checks.  The test
  split is the main pipeline's eval stage's own: the final numbers, not for choosing between
  variants.  The references (the workspace's own checkpoints) are read from the workspace when
  its eval scored that split, else from the experiment `reference-<split>` (`reference_experiment`:
  `-S eval.split=<split>` alone, so DVC re-runs eval and figures only), run once per baseline and
  read back from then on.
- `summary`, `paired`, `scored`: accuracy with its Wilson interval and per question kind, and the
  paired-bootstrap CI and sign-flip p of a difference on the same questions
  (`videor4.core.statistics`).
- `run_trials`: the command line of rl_trials.py and crp_sft_trials.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc.api import DVCFileSystem

from videor4.core.statistics import format_p, paired_difference, wilson
from videor4.pipeline.lineage import git_output

ROOT = Path(__file__).resolve().parent.parent
REPORTS = "reports/eval"  # the eval stage's per-question reports, on the split of its eval.split
EVAL_METRICS = "metrics/eval.json"  # the eval stage's metrics; "split": the split they scored
SPLITS = ("val", "test")  # eval.split's values
DEFAULT_SPLIT = "val"  # choices are made on val, so that the test split stays unseen until the end
DEFAULT_TIMEOUT_H = 12.0


# ------------------------------------------------------------------------------------ reading through DVC
def reader(repo: Path, rev: str | None = None) -> DVCFileSystem:
    """The repository's files (git-tracked and DVC-tracked alike) at `rev`: an experiment's commit
    or name, a git revision, or None for the workspace.  An experiment name must be unambiguous
    (`unambiguous_experiment`)."""
    if rev is not None:
        unambiguous_experiment(repo, rev)
    return DVCFileSystem(str(repo), rev=rev)


def experiment_commits(repo: Path, name: str) -> dict[str, str]:
    """{the commit it was run from: its commit} of each experiment named `name`, by baseline (an
    experiment's ref is refs/exps/<baseline[:2]>/<baseline[2:]>/<name>)."""
    listing = git_output("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/", cwd=repo) or ""
    found = {}
    for commit, ref in (line.split() for line in listing.splitlines()):
        parts = ref.split("/")
        if len(parts) == 5 and parts[4] == name:
            found[parts[2] + parts[3]] = commit
    return dict(sorted(found.items()))


def unambiguous_experiment(repo: Path, rev: str) -> None:
    """Exit when `rev` is no git revision but the name of experiments run from more than one commit:
    DVC would silently read the one of the workspace's commit, whichever was meant (a sweep re-run
    under new defaults reuses the old names).  Their commits are named, to pass one's instead."""
    if git_output("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=repo) is not None:
        return
    commits = experiment_commits(repo, rev)
    if len(commits) > 1:
        named = ", ".join(f"{commit[:7]} (from {baseline[:7]})" for baseline, commit in commits.items())
        raise SystemExit(
            f"experiment name {rev!r} is ambiguous: experiments of that name were run from {len(commits)} "
            f"commits; pass the experiment's commit instead: {named}"
        )


def read_text(fs: DVCFileSystem, path: str) -> str:
    try:
        with fs.open(path, "r", encoding="utf-8") as f:
            return f.read()
    except Exception as exc:  # a missing file, or outputs that neither the cache nor a remote holds
        raise SystemExit(
            f"cannot read {path} ({type(exc).__name__}: {exc}); another revision's outputs must be in "
            "the DVC cache (`dvc fetch --rev REV`, or `dvc pull` at that revision)"
        ) from exc


def load(fs: DVCFileSystem, path: str) -> dict[str, dict]:
    """A JSON-lines file's rows by their sample_id."""
    return {r["sample_id"]: r for r in map(json.loads, read_text(fs, path).splitlines()) if r}


def read_json(fs: DVCFileSystem, path: str) -> Any:
    return json.loads(read_text(fs, path))


def samples_file(split: str) -> str:
    """The data build's samples of a split (val or test)."""
    return f"data/built/samples_{split}.jsonl"


def eval_split(fs: DVCFileSystem) -> str:
    """The split a revision's eval stage scored: metrics/eval.json's "split" (test when the file,
    or the key, predates it: the eval stage scored test alone then)."""
    if not fs.exists(EVAL_METRICS):
        return "test"
    return str(read_json(fs, EVAL_METRICS).get("split") or "test")


def predictions(
    fs: DVCFileSystem, checkpoint: str, mode: str = "rumination", split: str = DEFAULT_SPLIT
) -> dict[str, dict]:
    """The eval stage's predictions of one checkpoint on a synthetic split (val or test), by sample
    id; exits when that revision's eval scored the other split."""
    scored_split = eval_split(fs)
    if scored_split != split:
        raise SystemExit(
            f"{REPORTS} at this revision scored the {scored_split} split, not {split} "
            f"({EVAL_METRICS} says so; queue the experiment with -S eval.split={split})"
        )
    return load(fs, f"{REPORTS}/{checkpoint}.synthetic.{mode}.jsonl")


def question_kinds(fs: DVCFileSystem, split: str = DEFAULT_SPLIT) -> dict[str, str]:
    """{sample id: question kind} of a synthetic split (val or test)."""
    return {i: s["question_kind"] for i, s in load(fs, samples_file(split)).items()}


def on_split(changes: Mapping[str, Any], split: str) -> dict[str, Any]:
    """A variant's params changes with its eval scoring `split` (`-S eval.split=<split>`)."""
    return {**changes, "eval.split": split}


def reference_experiment(repo: Path, split: str) -> dict[str, dict[str, Any]]:
    """{name: changes} of the experiment that scores the workspace's own checkpoints on `split`
    (`reference-<split>`: `-S eval.split=<split>` alone, so DVC re-runs eval and figures only), or
    {} when the workspace's eval scored that split already."""
    if eval_split(reader(repo)) == split:
        return {}
    return {f"reference-{split}": {"eval.split": split}}


def references_on(
    repo: Path, reference: Mapping[str, Any], experiments: Mapping[str, Any]
) -> tuple[DVCFileSystem, str]:
    """(the reader the references are read through, where: "workspace" or the experiment's name)."""
    if not reference:
        return reader(repo), "workspace"
    name = next(iter(reference))
    return reader(repo, experiments[name].rev), name


# ------------------------------------------------------------------------------------------------ scoring
def accuracy(records: dict[str, dict]) -> dict:
    """Accuracy over the questions with its Wilson interval."""
    acc = [r["acc"] for r in records.values()]
    ci = wilson(sum(acc), len(acc))
    return {"n": len(acc), "acc": ci.value, "wilson95": [ci.low, ci.high]}


def summary(records: dict[str, dict], kinds: dict[str, str]) -> dict:
    """Accuracy with its Wilson interval, overall and per question kind."""
    by_kind = defaultdict(list)
    for i in sorted(records):
        by_kind[kinds[i]].append(records[i]["acc"])
    return {
        **accuracy(records),
        "by_kind": {k: {"n": len(v), "acc": sum(v) / len(v)} for k, v in sorted(by_kind.items())},
    }


def paired(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Accuracy of `a` minus that of `b` on the same questions: the paired-bootstrap 95 % interval
    and the sign-flip p."""
    if sorted(a) != sorted(b):
        raise SystemExit(f"the two runs answered different questions ({len(a)} and {len(b)})")
    ids = sorted(a)
    d = paired_difference([a[i]["acc"] for i in ids], [b[i]["acc"] for i in ids])
    return {"difference": d.difference, "ci95": [d.low, d.high], "p": d.p_value}


def scored(records: dict[str, dict], kinds: dict[str, str], references: dict[str, dict[str, dict]]) -> dict:
    """`summary` plus, for each reference run, the paired difference on the same questions."""
    entry = summary(records, kinds)
    for ref, recs in references.items():
        entry[f"minus_{ref}"] = paired(records, recs)
    return entry


def spread(values: list[float]) -> dict:
    """A figure over seeds (or runs): mean, sd, min, max and the values."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "per_seed": values,
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def diff_text(d: dict) -> str:
    """A paired difference as "+1.2 [-0.6, +3.2], p 0.32"."""
    low, high = d["ci95"]
    return f"{100 * d['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}], p {format_p(d['p'])}"


# ----------------------------------------------------------------------------------- the experiment queue
def dvc_env() -> dict[str, str]:
    """This environment with its virtualenv first on PATH: the queue's workers start `dvc`, and
    the stages `python`, from PATH."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(), capture_output=True, text=True
    )
    if check and done.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def check_unchanged(repo: Path, before: str) -> None:
    """Exit when `git status --porcelain` differs from `before`."""
    after = git_status(repo)
    if after != before:
        raise SystemExit(f"{repo}: the workspace changed (git status before:\n{before}\nafter:\n{after})")


def require_up_to_date(repo: Path) -> None:
    """Exit unless `dvc status` finds the workspace's outputs as dvc.lock records them (the
    references are read from the workspace, the experiments start from it)."""
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    if status:
        raise SystemExit(
            f"{repo}: dvc status is not clean ({', '.join(sorted(status))}); run dvc repro first"
        )


@dataclass(frozen=True)
class Experiment:
    """An experiment as `dvc exp show --json` lists it."""

    name: str
    rev: str
    params: dict  # params.yaml
    metrics: dict  # {metrics file: its data}


def shown_experiments(repo: Path, baseline: str | None = None) -> dict[str, Experiment]:
    """The experiments `dvc exp show --json` lists, by name: those of the workspace's commit, or of
    `baseline` (the commit they were queued from, when the workspace has moved on since)."""
    found = {}
    rev = ["--rev", baseline] if baseline else []
    for commit in json.loads(dvc(repo, "exp", "show", "--json", *rev).stdout):
        for group in commit.get("experiments") or []:
            for exp in group.get("revs") or []:
                data = exp.get("data") or {}
                if exp.get("name") and not exp.get("error"):
                    found[exp["name"]] = Experiment(
                        exp["name"],
                        exp["rev"],
                        ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                        {k: v.get("data") for k, v in (data.get("metrics") or {}).items()},
                    )
    return found


def queue_status(repo: Path) -> tuple[dict[str, str], int]:
    """({task name: Queued | Running | Success | Failed}, active plus idle workers), from
    `dvc queue status`."""
    text = dvc(repo, "queue", "status").stdout
    tasks = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] != "Task":  # running, queued, failed, then done: the first counts
            tasks.setdefault(words[1], words[-1])
    workers = re.search(r"Worker status: (\d+) active, (\d+) idle", text)
    return tasks, (int(workers.group(1)) + int(workers.group(2))) if workers else 0


def param_value(value: Any) -> str:
    """A value as `-S key=value` takes it (DVC parses it as YAML; JSON is YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _param_at(params: dict, key: str) -> Any:
    for part in key.split("."):
        params = params[part]
    return params


def _start_workers(repo: Path, jobs: int) -> bool:
    """`dvc queue start -j jobs`: whether it started a worker."""
    return bool(re.search(r"Started '?[1-9]", dvc(repo, "queue", "start", "-j", str(jobs)).stdout))


def _wait(repo: Path, names: Iterable[str], jobs: int, deadline: float, poll: float) -> dict[str, str]:
    """Poll `dvc queue status` until none of `names` is queued or running; TimeoutError at the
    deadline.  A worker exits when it finds the queue empty, or on a shutdown message left for its
    name by an earlier `dvc queue stop`; experiments still queued with no worker for two polls get
    new ones."""
    names, idle = set(names), 0
    while True:
        tasks, workers = queue_status(repo)
        mine = {n: tasks.get(n, "unknown") for n in names}
        if not {"Queued", "Running"} & set(mine.values()):
            return mine
        idle = idle + 1 if workers == 0 and "Running" not in mine.values() else 0
        if idle >= 2:
            print("queue: experiments wait with no worker: dvc queue start again", file=sys.stderr)
            _start_workers(repo, jobs)
            idle = 0
        if time.monotonic() > deadline:
            raise TimeoutError(mine)
        time.sleep(poll)


def _drop_unfinished(repo: Path, names: Iterable[str]) -> None:
    """Kill this call's running experiments and take its queued ones off the queue."""
    tasks, _ = queue_status(repo)
    for name in names:
        if tasks.get(name) == "Running":
            dvc(repo, "queue", "kill", name, check=False)
        elif tasks.get(name) == "Queued":
            dvc(repo, "queue", "remove", name, check=False)


def _stop_workers(repo: Path, grace: float = 90.0) -> None:
    """The workers this call started leave by themselves once the queue is empty; `dvc queue stop`
    the ones still there after `grace` seconds (a stop sent when none is left would wait in the
    queue's broker and end the next worker of that name after its first experiment)."""
    deadline = time.monotonic() + grace
    while queue_status(repo)[1]:
        if time.monotonic() > deadline:
            dvc(repo, "queue", "stop", check=False)
            return
        time.sleep(5)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _existing(
    variants: Iterable[str],
    existing: Mapping[str, Any],
    tasks: Mapping[str, str],
    reuse: bool,
    always: Iterable[str],
) -> list[str]:
    """The experiments of `variants` that exist or wait in the queue already, to read back rather than
    run; exits on one that failed before, and on one that exists unless `reuse` or `always` allows it."""
    failed = sorted(n for n in variants if tasks.get(n) == "Failed")
    if failed:
        raise SystemExit(
            f"experiments {failed} failed before (`dvc queue logs NAME` says why): "
            f"`dvc queue remove {' '.join(failed)}` to run them again"
        )
    clash = sorted(n for n in variants if n in existing or tasks.get(n) in ("Queued", "Running"))
    blocking = [] if reuse else [n for n in clash if n not in set(always)]
    if blocking:
        raise SystemExit(
            f"experiments {blocking} exist already: pass --reuse to read them back, or remove them "
            f"(`dvc exp remove {' '.join(blocking)}`) to run them again"
        )
    return clash


def run_queued(
    repo: Path,
    variants: Mapping[str, Mapping[str, Any]],
    jobs: int = 1,
    timeout_h: float = DEFAULT_TIMEOUT_H,
    reuse: bool = False,
    poll: float = 15.0,
    always_reuse: Iterable[str] = (),
    baseline: str | None = None,
) -> dict[str, Experiment]:
    """Run each {experiment name: {param key: value}} as a queued experiment and return them as
    `dvc exp show` lists them.  An experiment of that name that exists already is read back as it
    is with `reuse`, else it is an error (`dvc exp remove NAME` removes it).  Exits when an
    experiment fails (`dvc queue logs NAME` says why) or the queue runs past `timeout_h` (this
    call's experiments killed or taken off the queue, as on Ctrl-C or SIGTERM).  The experiments
    `always_reuse` names (a reference experiment) are read back when they exist, whatever `reuse`;
    `baseline`: the commit existing experiments were queued from (default: the workspace's)."""
    before = git_status(repo)
    tasks, workers_before = queue_status(repo)
    clash = _existing(variants, shown_experiments(repo, baseline), tasks, reuse, always_reuse)
    todo = {n: changes for n, changes in variants.items() if n not in clash}
    waiting = [n for n in variants if n in todo or tasks.get(n) in ("Queued", "Running")]
    if waiting:
        started = time.perf_counter()
        previous = signal.signal(signal.SIGTERM, _interrupt)
        ours = False
        try:
            for name, changes in todo.items():
                sets = [a for key, value in changes.items() for a in ("-S", f"{key}={param_value(value)}")]
                dvc(repo, "exp", "run", "--queue", "-n", name, *sets)
                print(f"queued {name}: {' '.join(sets[1::2]) or '(no change)'}", file=sys.stderr)
            ours = _start_workers(repo, jobs) and workers_before == 0  # then every worker is this call's
            status = _wait(repo, waiting, jobs, time.monotonic() + 3600 * timeout_h, poll)
        except (TimeoutError, KeyboardInterrupt, SystemExit) as stopped:
            _drop_unfinished(repo, todo)  # the experiments this call queued
            if isinstance(stopped, SystemExit):  # a dvc command failed: its message
                raise
            raise SystemExit(
                f"the queue did not finish ({stopped}); this run's experiments were stopped"
            ) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            if ours:
                _stop_workers(repo)
        unsuccessful = sorted(n for n, s in status.items() if s != "Success")
        if unsuccessful:
            logs = "\n".join(dvc(repo, "queue", "logs", n, check=False).stdout[-3000:] for n in unsuccessful)
            raise SystemExit(f"experiments {unsuccessful} did not succeed ({status}):\n{logs}")
        print(
            f"queue: {len(waiting)} experiment(s) in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
    check_unchanged(repo, before)
    shown = shown_experiments(repo, baseline)
    missing = sorted(set(variants) - set(shown))
    if missing:
        raise SystemExit(f"dvc exp show does not list {missing}")
    for name, changes in variants.items():  # the experiment ran with what was asked of it
        for key, value in changes.items():
            if _param_at(shown[name].params, key) != value:
                raise SystemExit(f"{name}: {key} is {_param_at(shown[name].params, key)!r}, not {value!r}")
    return {name: shown[name] for name in variants}


def queue_options() -> argparse.ArgumentParser:
    """--repo, --jobs, --timeout-h, --reuse and --split: the options of every script that runs queued
    experiments."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument(
        "--repo", type=Path, default=ROOT, help="the repository (default: this one), after dvc repro"
    )
    ap.add_argument("--jobs", type=int, default=1, help="queue workers: dvc queue start -j JOBS (default 1)")
    ap.add_argument(
        "--timeout-h",
        type=float,
        default=DEFAULT_TIMEOUT_H,
        help=f"give up (killing this run's experiments) after this many hours (default {DEFAULT_TIMEOUT_H})",
    )
    ap.add_argument(
        "--reuse", action="store_true", help="read back experiments of these names that exist already"
    )
    ap.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default=DEFAULT_SPLIT,
        help=f"the split every experiment's eval scores, -S eval.split=SPLIT (default {DEFAULT_SPLIT}: "
        "choose on val, keep test unseen)",
    )
    return ap


# -------------------------------------------------------------------------------------- the trial scripts
def _earlier_results(out: Path, script: str, split: str) -> dict:
    """`out`'s results to merge this run's into: those of the same split only (a file without
    "split" was scored on test), so that no file mixes val and test numbers."""
    earlier = json.loads(out.read_text()) if out.exists() else {}
    if earlier and earlier.get("split", "test") != split:
        print(
            f"{out}: its results were scored on {earlier.get('split', 'test')}; they are replaced",
            file=sys.stderr,
        )
        earlier = {}
    return {"script": script, "split": split, **{k: v for k, v in earlier.items() if k != "script"}}


def run_trials(
    doc: str,
    script: str,
    default_out: Path,
    checkpoint: str,
    references: tuple[str, ...],
    variants: dict[str, dict[str, Any]],
    prefix: str,
    metrics_file: str,
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> None:
    """A trial benchmark's command line: each variant (or those `--only` names), {param key: value},
    runs as the queued experiment `<prefix>-<variant>` with `-S eval.split=<--split>` (val by
    default); its `checkpoint`'s rumination predictions are scored against the workspace's
    `references` on the same questions of that split (`reference_experiment` when the workspace's
    eval scored the other one) and merged into `--out` (a run of some variants keeps the others'
    earlier results of the same split in the file), with the split, the experiment's name, commit,
    params changed and the trained stage's `metrics_file`.  `parents`: the caller's own options,
    parsed by the caller, listed in --help."""
    ap = argparse.ArgumentParser(
        description=doc.splitlines()[0], parents=[*parents, queue_options()], allow_abbrev=False
    )
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--only", nargs="*", default=None, help=f"variants to run, of {', '.join(variants)}")
    args = ap.parse_args()
    unknown = sorted(set(args.only or ()) - set(variants))
    if unknown:
        ap.error(f"unknown variants {unknown}")
    repo, split = args.repo.resolve(), args.split
    require_up_to_date(repo)
    chosen = {name: changes for name, changes in variants.items() if not args.only or name in args.only}
    ref = reference_experiment(repo, split)
    queued = {f"{prefix}-{n}": on_split(c, split) for n, c in chosen.items()}
    experiments = run_queued(repo, {**ref, **queued}, args.jobs, args.timeout_h, args.reuse, always_reuse=ref)
    ref_fs, ref_where = references_on(repo, ref, experiments)
    kinds = question_kinds(ref_fs, split)
    reference = {name: predictions(ref_fs, name, split=split) for name in references}
    results = _earlier_results(args.out, script, split)
    results["references_from"] = ref_where
    results.update({name: summary(recs, kinds) for name, recs in reference.items()})
    for name, changes in chosen.items():
        exp = experiments[f"{prefix}-{name}"]
        fs = reader(repo, exp.rev)
        entry = scored(predictions(fs, checkpoint, split=split), question_kinds(fs, split), reference)
        print(name, json.dumps(entry), flush=True)
        results[name] = {
            **entry,
            "experiment": exp.name,
            "rev": exp.rev,
            "changes": changes,
            "stage_metrics": exp.metrics.get(metrics_file),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
