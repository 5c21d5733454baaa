"""SFT on TRL: bad trajectories skipped and counted, a real short run, resume bookkeeping, format check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMALL_PARAMS
from videor4.core.params import ParamsError
from videor4.policy.encoding import PolicyEncoder
from videor4.policy.model import ModelConfig, load_policy
from videor4.policy.rollout import format_valid_rate, is_well_formed
from videor4.rumination.protocol import parse_turn
from videor4.rumination.tools import VisionConfig
from videor4.rumination.trajectory import Trajectory, direct_trajectory, trajectory_messages
from videor4.train.lifecycle import fingerprint, prepare_work_dir
from videor4.train.sft import (
    SFTDataError,
    SFTSettings,
    format_check,
    load_sft_data,
    sft_settings,
    train_sft,
    trajectory_problem,
)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    policy = load_policy(tiny_dir)
    return PolicyEncoder(policy.tokenizer, policy.image_processor, max_length=4096)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_bad_trajectories_are_skipped_with_counted_reasons(tmp_path, small_built, encoder):
    good = _rows(small_built / "sft_crp.jsonl")
    assert len(good) >= 6
    missing = json.loads(json.dumps(good[0]))
    missing["steps"][0]["observation"]["images"] = [str(tmp_path / "gone.png")]
    bad_call = json.loads(json.dumps(good[1]))
    bad_call["steps"][0]["tool_call"] = {"name": "zoom", "arguments": {}}
    bad_answer = json.loads(json.dumps(good[2]))
    bad_answer["final_answer"] = "K4}17"  # cannot round-trip through \boxed{}
    lines = [json.dumps(r) for r in good[3:]] + [
        json.dumps(missing),
        json.dumps(bad_call),
        json.dumps(bad_answer),
        "{not json",
    ]
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(lines) + "\n")

    data = load_sft_data(path, encoder, max_bad_fraction=0.9)
    assert data.total == len(lines)
    assert dict(data.skipped) == {"missing_image": 1, "unparseable_turn": 2, "malformed_row": 1}
    assert len(data.trajectories) == len(good) - 3
    assert all(
        t.traj_id not in {missing["traj_id"], bad_call["traj_id"], bad_answer["traj_id"]}
        for t in data.trajectories
    )

    with pytest.raises(SFTDataError, match=r"4 of \d+ trajectories .* missing_image 1.*max_bad_fraction 0.1"):
        load_sft_data(path, encoder, max_bad_fraction=0.1)

    tight = PolicyEncoder(encoder.tokenizer, encoder.image_processor, max_length=64)
    with pytest.raises(SFTDataError, match="too_long"):
        load_sft_data(small_built / "sft_drp.jsonl", tight, max_bad_fraction=0.5)


def test_unreadable_videos_are_counted_and_other_errors_propagate(
    tmp_path, small_built, encoder, monkeypatch
):
    good = _rows(small_built / "sft_crp.jsonl")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not an mp4 at all" * 64)
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "p1.png").write_bytes(b"not a png")
    bad_video, bad_pages = json.loads(json.dumps(good[0])), json.loads(json.dumps(good[1]))
    bad_video["video"], bad_pages["video"] = str(corrupt), str(pages)
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*good[2:], bad_video, bad_pages]) + "\n")
    data = load_sft_data(path, encoder, max_bad_fraction=0.9)
    assert dict(data.skipped) == {"unreadable_video": 2}
    assert len(data.trajectories) == len(good) - 2

    def broken(images):  # a bug in encoding is not a bad video: it must not hide under max_bad_fraction
        raise TypeError("process_images() got an unexpected keyword")

    monkeypatch.setattr(encoder, "process_images", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_sft_data(path, encoder, max_bad_fraction=0.9)


def test_settings_merge_shared_and_stage_keys_strictly():
    params = {
        "seed": 3,
        "sft": {"batch_size": 4, "max_length": 999, "drp": {"learning_rate": 0.01}, "crp": {"epochs": 2}},
    }
    drp = sft_settings(params, "drp")
    assert (drp.batch_size, drp.max_length, drp.learning_rate, drp.seed) == (4, 999, 0.01, 3)
    assert sft_settings(params, "crp").epochs == 2
    with pytest.raises(ValueError, match="unknown params sft.drp: learnin_rate"):
        sft_settings({"sft": {"drp": {"learnin_rate": 1}}}, "drp")


# ---------------------------------------------------------------- the single-pass baseline (direct_sft)
def test_a_direct_trajectory_answers_the_same_question_in_one_turn_without_a_tool(small_built):
    rows = _rows(small_built / "sft_drp.jsonl")
    for problem_type in ("open", "multiple_choice"):
        traj = Trajectory.from_dict(next(r for r in rows if r["problem_type"] == problem_type))
        direct = direct_trajectory(traj)
        assert (direct.kind, direct.steps, direct.final_answer) == ("direct", [], traj.final_answer)
        same = ("sample_id", "question", "answers", "options", "video", "frame_indices", "vision")
        assert all(getattr(direct, k) == getattr(traj, k) for k in same)
        if problem_type == "multiple_choice":  # answered by its option letter, as DRP trajectories are
            assert direct.final_answer in "ABCDEFGH" and direct.final_answer in traj.answers
        messages = trajectory_messages(direct)
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]  # no tool turn
        last = messages[-1]["content"][0]["text"]
        assert last.endswith(f"\\boxed{{{traj.final_answer}}}") and "<tool_call>" not in last
        turn = parse_turn(last)
        assert turn.tool_call is None and turn.answer == traj.final_answer and is_well_formed(turn)
        assert trajectory_problem(direct) is None and direct.turn_texts() == [last]
        assert Trajectory.from_dict(direct.to_dict()) == direct


def test_an_unknown_sft_target_is_an_error_naming_it(tmp_path, encoder):
    with pytest.raises(ParamsError, match=r"'distill' is not one of rumination, direct"):
        SFTSettings(target="distill")
    with pytest.raises(ParamsError, match=r"'distill'"):
        sft_settings({"sft": {"direct": {"target": "distill"}}}, "direct")
    path = tmp_path / "sft.jsonl"
    path.write_text("{}\n")
    with pytest.raises(ParamsError, match=r"'distill'"):
        load_sft_data(path, encoder, max_bad_fraction=0.5, target="distill")


def test_direct_target_trains_on_the_same_questions_as_drp(small_built, encoder):
    drp = load_sft_data(small_built / "sft_drp.jsonl", encoder, max_bad_fraction=0.1)
    direct = load_sft_data(small_built / "sft_drp.jsonl", encoder, max_bad_fraction=0.1, target="direct")
    assert [t.sample_id for t in direct.trajectories] == [t.sample_id for t in drp.trajectories]
    assert {t.kind for t in direct.trajectories} == {"direct"} and not any(
        t.steps for t in direct.trajectories
    )
    assert [t.final_answer for t in direct.trajectories] == [t.final_answer for t in drp.trajectories]
    assert 0 < direct.tokens < drp.tokens  # the same questions, without the tool turns


def test_the_shipped_direct_settings_are_drps_with_the_direct_target():
    """direct_sft is compared against drp_sft's descendants: the same budget, only the target differs."""
    import dataclasses

    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    drp, direct = sft_settings(params, "drp"), sft_settings(params, "direct")
    assert (drp.target, direct.target) == ("rumination", "direct")
    assert dataclasses.replace(direct, target="rumination") == drp


def test_work_dir_keeps_checkpoints_only_for_the_same_run(tmp_path):
    work = tmp_path / "work"
    assert prepare_work_dir(work, fingerprint(a=1)) is None
    (work / "checkpoint-4").mkdir()
    (work / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert prepare_work_dir(work, fingerprint(a=1)).endswith("checkpoint-4")  # interrupted: resume
    assert prepare_work_dir(work, fingerprint(a=2)) is None  # inputs changed: start clean
    assert not (work / "checkpoint-4").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_built, tiny_dir):
    root = tmp_path_factory.mktemp("sft")
    settings = SFTSettings(
        learning_rate=3e-3, epochs=3, batch_size=4, warmup_ratio=0.0, save_steps=1000, max_length=4096
    )
    logged: list[tuple[dict, int]] = []
    metrics, curve = train_sft(
        small_built / "sft_drp.jsonl",
        tiny_dir,
        root / "out",
        root / "work",
        ModelConfig(),
        settings,
        log_fn=lambda m, step: logged.append((dict(m), step)),
    )
    return root, metrics, curve, logged


def test_sft_run_lowers_the_loss_and_saves_a_checkpoint(trained):
    root, metrics, curve, logged = trained
    assert metrics["steps"] == len(curve) >= 6
    assert metrics["train_loss_last"] < metrics["train_loss_first"] - 0.5
    assert metrics["skipped_total"] == 0 and metrics["resumed_from_step"] == 0
    assert metrics["train_tokens_per_second"] > 0
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    per_step = [m for m, _ in logged if "train/loss" in m]
    assert len(per_step) == metrics["steps"]
    assert all({"train/loss", "train/learning_rate", "train/grad_norm"} <= set(m) for m in per_step)
    policy = load_policy(root / "out")  # an ordinary HF checkpoint with its tokenizer and processor
    assert policy.model.config.model_type == "qwen2_5_vl"
    assert not (root / "work").exists()  # checkpoints of a finished run are removed


def test_format_check_generates_and_parses_first_turns(trained, small_built):
    root, *_ = trained
    vision = VisionConfig.from_dict(SMALL_PARAMS["vision"])
    rate, rows = format_check(
        root / "out", small_built / "samples_test.jsonl", vision, num_prompts=3, max_new_tokens=24
    )
    assert len(rows) == 3 and 0.0 <= rate <= 1.0
    assert rate == sum(r["well_formed"] for r in rows) / 3
    for r in rows:
        assert r["well_formed"] == is_well_formed(parse_turn(r["text"]))
    # a direct model is judged on answering: the same first turns, a tool call no longer counts
    direct_rate, direct_rows = format_check(
        root / "out", small_built / "samples_test.jsonl", vision, 3, 24, target="direct"
    )
    assert [r["text"] for r in direct_rows] == [r["text"] for r in rows]
    for r in direct_rows:
        turn = parse_turn(r["text"])
        assert r["well_formed"] == (is_well_formed(turn) and turn.tool_call is None)
    assert direct_rate == sum(r["well_formed"] for r in direct_rows) / 3


@pytest.mark.parametrize(
    "text, ok",
    [
        ('Look.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [2]}}\n</tool_call>', True),
        ("It reads 5.\n\\boxed{5}", True),
        ("\\boxed{5} or \\boxed{6}", False),
        ('<tool_call>{"name": "zoom", "arguments": {}}</tool_call>', False),
        ('<tool_call>{"name": "clipping", "arguments": {"target_frames": [2]}}', False),
        ("0.6, 0.6, 0.6, 0.6", False),
    ],
)
def test_well_formed_turns(text, ok):
    assert is_well_formed(parse_turn(text)) is ok
    assert format_valid_rate([text]) == float(ok)


@pytest.mark.parametrize("name, stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_resolve_against_the_trainer_settings(name, stage):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    root = Path(__file__).resolve().parent.parent
    cfg = HfTrainerDeepSpeedConfig(str(root / "configs/deepspeed" / f"{name}.json"))
    args = TrainingArguments(
        output_dir="unused",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        max_grad_norm=0.5,
        use_cpu=True,
        report_to=[],
    )
    cfg.trainer_config_process(args)
    c = cfg.config
    assert c["zero_optimization"]["stage"] == stage and cfg.is_zero3() == (stage == 3)
    # "auto" values are taken from the SFT settings the stage passes to the trainer
    assert (
        c["train_micro_batch_size_per_gpu"],
        c["gradient_accumulation_steps"],
        c["gradient_clipping"],
    ) == (2, 4, 0.5)
    assert c["train_batch_size"] == 8 * args.world_size
