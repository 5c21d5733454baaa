"""The choices benchmarks make from val: benchmarks/settings_over_seeds.py's rule over seeds."""

import importlib.util
from pathlib import Path

import pytest


def load_benchmark(name: str):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(rl_d: float, drp_sft: float) -> dict:
    return {"rl_d": {"acc": rl_d}, "drp_sft": {"acc": drp_sft}, "rl_d_minus_drp_sft": rl_d - drp_sft}


def records(right: list[int]) -> dict[str, dict]:
    return {f"q{i}": {"acc": float(r)} for i, r in enumerate(right)}


def both(rl_d: list[int], drp_sft: list[int]) -> dict[str, dict[str, dict]]:
    return {"rl_d": records(rl_d), "drp_sft": records(drp_sft)}


def test_settings_over_seeds_takes_the_best_mean_a_tie_to_the_first_named_arm_and_pairs_only_shared_records():
    bench = load_benchmark("settings_over_seeds")
    tied = {"16": {0: entry(0.5, 0.4), 1: entry(0.3, 0.3)}, "96": {0: entry(0.3, 0.4), 1: entry(0.5, 0.3)}}
    shared = {("16", 0): both([1, 0, 1, 0], [1, 0, 0, 0]), ("96", 0): both([1, 1, 1, 0], [1, 0, 0, 0])}
    result = bench.choose(tied, shared)
    assert result["chosen"] == "16" and result["seeds"] == [0, 1]
    assert list(result["paired_same_seed"]) == ["96_minus_16_seed0"]
    pair = result["paired_same_seed"]["96_minus_16_seed0"]
    assert pair["rl_d"]["difference"] == pytest.approx(0.25)
    assert pair["drp_sft"]["difference"] == 0.0  # each checkpoint paired with itself across the arms
    assert result["arms"]["96"]["rl_d_minus_drp_sft"]["per_seed"] == pytest.approx([-0.1, 0.2])
    assert result["arms"]["96"]["drp_sft_val_acc"]["per_seed"] == pytest.approx([0.4, 0.3])
    # named the other way round, the tie goes to the other arm, and the pair is written that way
    flipped = bench.choose({"96": tied["96"], "16": tied["16"]}, shared)
    assert flipped["chosen"] == "96" and list(flipped["paired_same_seed"]) == ["16_minus_96_seed0"]

    better = {"16": tied["16"], "96": {0: entry(0.6, 0.4), 1: entry(0.3, 0.3)}}
    better["lr_1e-4"] = {1: entry(0.9, 0.3)}
    result = bench.choose(better, {})
    assert result["chosen"] == "lr_1e-4" and result["seeds"] == [1]  # only seed 1 ran every arm
    assert bench.choose({"16": {0: entry(0.5, 0.4)}, "96": {0: entry(0.6, 0.4)}}, {})["chosen"] == "96"
    with pytest.raises(SystemExit, match="no seed"):
        bench.choose({"16": {0: entry(0.5, 0.4)}, "96": {1: entry(0.6, 0.4)}}, {})


def test_the_trial_reader_refuses_an_experiment_name_run_from_two_commits_and_reads_each_by_its_commit(
    tmp_path,
):
    """A sweep re-run under new defaults reuses its experiment names; DVC resolves such a name to the
    workspace commit's experiment (or any single one) silently, so a name shared across commits is
    refused with their commits named, and each is read by its commit."""
    import json
    import os
    import subprocess
    import sys

    trial_repo = load_benchmark("trial_repo")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def dvc(*args: str) -> str:
        return run(sys.executable, "-m", "dvc", *args)

    run("git", "init", "-q")
    dvc("init", "-q")
    (tmp_path / "params.yaml").write_text("x: 1\n")
    write = "import yaml; open('out.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))['x']))"
    (tmp_path / "dvc.yaml").write_text(
        'stages:\n  write:\n    cmd: python -c "' + write + '"\n    params: [x]\n    outs: [out.txt]\n'
    )
    dvc("repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "first")
    first = run("git", "rev-parse", "HEAD").strip()
    dvc("exp", "run", "-q", "-n", "same", "-S", "x=2")
    dvc("exp", "run", "-q", "-n", "only-first", "-S", "x=4")
    (tmp_path / "NOTES").write_text("new defaults\n")
    run("git", "add", "NOTES")
    run("git", "commit", "-qm", "second")
    second = run("git", "rev-parse", "HEAD").strip()
    dvc("exp", "run", "-q", "-n", "same", "-S", "x=3")

    assert list(trial_repo.experiment_commits(tmp_path, "same")) == sorted([first, second])
    with pytest.raises(SystemExit) as refused:
        trial_repo.reader(tmp_path, "same")
    message = str(refused.value)
    assert (
        "'same' is ambiguous" in message
        and f"from {first[:7]}" in message
        and f"from {second[:7]}" in message
    )
    shown = json.loads(dvc("exp", "show", "--json", "--all-commits"))
    revs = {
        (commit["rev"], exp["name"]): exp["rev"]
        for commit in shown
        for group in commit.get("experiments") or []
        for exp in group.get("revs") or []
    }
    for baseline, value in ((first, "2"), (second, "3")):
        assert trial_repo.read_text(trial_repo.reader(tmp_path, revs[(baseline, "same")]), "out.txt") == value
    # a name run from one commit, and a git revision, read as before
    assert trial_repo.read_text(trial_repo.reader(tmp_path, "only-first"), "out.txt") == "4"
    assert trial_repo.read_text(trial_repo.reader(tmp_path, "HEAD"), "out.txt") == "1"
