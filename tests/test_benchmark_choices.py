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
