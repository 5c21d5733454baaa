"""Strict params: every section of params.yaml fills a dataclass, and an unknown or mistyped
key ends the stage with one line naming the key and its section."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from videor4.core.params import ParamsError, curriculum_settings, fill
from videor4.data.build import build_config, data_params
from videor4.data.synthetic import synthetic_config
from videor4.evaluation.evaluate import curriculum_inits, eval_settings
from videor4.policy.model import model_config
from videor4.policy.rollout import rollout_limits
from videor4.rumination.tools import vision_config
from videor4.train.grpo import grpo_settings
from videor4.train.pretrain import pretrain_settings
from videor4.train.rewards import reward_config
from videor4.train.sft import sft_settings

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@dataclass
class Inner:
    depth: int = 1
    name: str | None = None


@dataclass
class Outer:
    rate: float = 0.5
    inner: Inner = field(default_factory=Inner)
    where: Path | None = None


def test_fill_converts_and_nests():
    got = fill(Outer, {"rate": 1, "inner": {"depth": 3}, "where": "a/b"}, "outer")
    assert got == Outer(rate=1.0, inner=Inner(depth=3), where=Path("a/b")) and isinstance(got.rate, float)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"rat": 1}, "unknown params outer: rat (known: inner, rate, where)"),
        ({"inner": {"dept": 2}}, "unknown params outer.inner: dept (known: depth, name)"),
        ({"inner": {"depth": "two"}}, "params outer.inner.depth: expected int, got 'two'"),
        ({"inner": {"depth": True}}, "params outer.inner.depth: expected int, got True"),
        ({"rate": "fast"}, "params outer.rate: expected float, got 'fast'"),
        ({"inner": 3}, "params outer.inner: expected Inner, got 3"),
    ],
)
def test_fill_names_the_key_and_section(section, message):
    with pytest.raises(ParamsError) as err:
        fill(Outer, section, "outer")
    assert str(err.value) == message


def test_every_section_of_the_shipped_params_fills_its_dataclass():
    vision_config(PARAMS)
    synthetic_config(PARAMS)
    build_config(PARAMS)
    model_config(PARAMS)
    rollout_limits(PARAMS)
    reward_config(PARAMS)
    eval_settings(PARAMS)
    assert pretrain_settings(PARAMS).tasks["read"] > 0
    assert synthetic_config(PARAMS).preset == "readable"
    assert curriculum_inits(PARAMS)["crp_sft"] == "rl_d"
    for which in ("drp", "crp"):
        sft_settings(PARAMS, which)
    for which in ("rl_d", "rl_c"):
        grpo_settings(PARAMS, which)


def test_the_dataclass_defaults_are_the_shipped_params():
    """A default in code that disagrees with params.yaml misleads whoever reads either."""
    import dataclasses

    from videor4.data.build import DataParams
    from videor4.data.synthetic import SyntheticConfig

    world = dataclasses.asdict(SyntheticConfig())
    assert {k: world[k] for k in PARAMS["synthetic"]} == PARAMS["synthetic"]
    data = dataclasses.asdict(DataParams())
    # (data.synthesis and data.qc default to the paper's recipe, which their dataclasses say;
    # params.yaml tunes them)
    for key in ("sizes", "tokenizer_corpus", "ocr", "max_bad_fraction", "max_video_pixels", "max_frames"):
        assert data[key] == PARAMS["data"][key], key


def test_data_sizes_come_from_params_and_a_typo_is_an_error():
    cfg = build_config(PARAMS)
    assert (cfg.synthesis.n_drp, cfg.synthesis.n_crp) == (
        PARAMS["data"]["sizes"]["drp"],
        PARAMS["data"]["sizes"]["crp"],
    )
    bad = {**PARAMS, "data": {**PARAMS["data"], "sizes": {"dpr": 10}}}
    with pytest.raises(ParamsError, match=r"unknown params data.sizes: dpr \(known: crp, drp, rl_c, rl_d\)"):
        build_config(bad)
    with pytest.raises(ParamsError, match=r"unknown params data.qc: min_coverage"):
        data_params({"data": {"qc": {"min_coverage": 0.5}}})
    with pytest.raises(ParamsError, match=r"data.source: 'youtube' is not one of synthetic, m4vitevqa"):
        data_params({"data": {"source": "youtube"}})
    with pytest.raises(
        ParamsError, match=r"data.synthesis.crp_crop_target: 'crop' is not one of clip, frame"
    ):
        data_params({"data": {"synthesis": {"crp_crop_target": "crop"}}})


def test_the_curriculum_section_is_strict():
    assert curriculum_inits({"curriculum": {"crp_sft_init": "models/base"}})["crp_sft"] == "base"
    with pytest.raises(ParamsError, match=r"unknown params curriculum: crp_init \(known: crp_sft_init\)"):
        curriculum_inits({"curriculum": {"crp_init": "models/base"}})


def test_training_stages_take_train_seed_and_pretraining_keeps_seed():
    params = {**PARAMS, "seed": 0, "train_seed": 3}
    assert sft_settings(params, "drp").seed == 3 and grpo_settings(params, "rl_c").seed == 3
    assert pretrain_settings(params).seed == 0


def test_curriculum_sections_name_their_stage():
    with pytest.raises(ParamsError, match=r"unknown params sft.drp: epochz"):
        sft_settings({"sft": {"drp": {"epochz": 3}}}, "drp")
    with pytest.raises(ParamsError, match=r"unknown rl stage 'rl_x'"):
        curriculum_settings(dict, {}, "rl", "rl_x", ("rl_d", "rl_c"))


@pytest.mark.parametrize(
    "stage, argv, params, message",
    [
        (
            "build_data",
            ["--videos", "v", "--out", "o", "--metrics", "m.json"],
            {"data": {"qc": {"min_coverage": 0.5}}},
            "error: build_data: unknown params data.qc: min_coverage "
            "(known: min_answer_similarity, min_clip_text_px, min_evidence_coverage)",
        ),
        (
            "make_videos",
            ["--out", "o", "--metrics", "m.json"],
            {"synthetic": {"n_video": 3}},
            "error: make_videos: unknown params synthetic: n_video",
        ),
        (
            "base_model",
            ["--corpus", "a.jsonl", "--out", "o", "--metrics", "m.json"],
            {"model": {"name_or_path": 7}},
            "error: base_model: params model.name_or_path: expected str, got 7",
        ),
    ],
)
def test_a_stage_with_a_bad_key_ends_in_one_line(tmp_path, stage, argv, params, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (tmp_path / "o").exists()
