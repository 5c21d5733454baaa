"""The GRPO update on TRL with multi-turn image-observation rollouts, on a real tiny policy."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SMALL_PARAMS
from videor4.policy.encoding import PolicyEncoder
from videor4.policy.model import load_policy, model_config
from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
from videor4.rumination.tools import VisionConfig
from videor4.train.grpo import GRPOSettings, group_advantages, make_trainer, pack_rollouts, train_grpo
from videor4.train.rewards import RewardConfig

VISION = VisionConfig.from_dict(SMALL_PARAMS["vision"])
CROP = (
    'Zoom in.\n<tool_call>\n{"name": "cropping", '
    '"arguments": {"target_image": 2, "bbox_2d": [0.1, 0.1, 0.6, 0.6]}}\n</tool_call>'
)
CLIP = 'Look.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [1, 3]}}\n</tool_call>'
TINY_RL = dict(
    group_size=2,
    prompts_per_step=2,
    micro_batch_size=2,
    max_new_tokens=8,
    eval_prompts=2,
    eval_group_size=2,
    temperature=0.7,
    rollout_batch_size=8,
)


def test_group_advantages_normalize_within_groups_and_flag_zero_variance():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 4.0])
    adv, zero = group_advantages(rewards, 3)
    assert zero.tolist() == [True, False]
    assert adv[:3].abs().max() == 0  # an all-equal group gives no gradient
    assert torch.allclose(adv[3:], torch.tensor([-1.0, 0.0, 1.0]) * 2 / (2 + 1e-4), atol=1e-5)
    adv, _ = group_advantages(rewards, 3, "none")
    assert torch.allclose(adv[3:], torch.tensor([-2.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(rewards, 3, "sometimes")


def test_settings_refuse_groups_that_do_not_fit_the_batch():
    with pytest.raises(ValueError, match="group_size"):
        GRPOSettings(group_size=1).validate()
    with pytest.raises(ValueError, match="micro_batch_size"):
        GRPOSettings(group_size=3, prompts_per_step=1, micro_batch_size=2).validate()


@pytest.fixture(scope="module")
def rows(small_built):
    return [json.loads(line) for line in (small_built / "rl_c.jsonl").read_text().splitlines()]


def _trainer_and_engine(tiny_dir, rows, tmp_path):
    """The TRL trainer over the tiny policy, its encoder, and a rollout engine on the trainer's model."""
    torch.manual_seed(0)
    policy = load_policy(tiny_dir)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    settings = GRPOSettings(**TINY_RL)
    rollout = settings.rollout_settings(RolloutSettings(max_tool_calls=3))
    trainer = make_trainer(
        policy,
        encoder,
        rows,
        settings,
        rollout,
        RewardConfig(),
        VISION,
        model_config(SMALL_PARAMS),
        tmp_path / "work",
    )
    return trainer, encoder, RolloutEngine(trainer.model, encoder, rollout)


def test_trainer_logprobs_equal_sampling_time_logprobs_with_observations_masked(tiny_dir, rows, tmp_path):
    """TRL's loss forward over packed rollouts (observation images in the pass, masked from the loss)
    gives back the log-probabilities recorded while sampling, for the same weights."""
    trainer, encoder, engine = _trainer_and_engine(tiny_dir, rows, tmp_path)
    rollouts = start_group(engine, rows[0], VISION, 2, 0) + start_group(engine, rows[1], VISION, 2, 1)
    engine.force_turn(rollouts[0], CROP)
    engine.force_turn(rollouts[1], CLIP)
    engine.force_turn(rollouts[2], CROP)
    engine.run(rollouts)  # sampled turns after image observations

    batch = pack_rollouts(rollouts, encoder, "cpu")
    completion, tool_mask = batch["completion_ids"], batch["tool_mask"]
    # observation images live in the completion and none of their tokens is trained on
    assert ((completion == encoder.image_token_id) & (tool_mask == 1)).sum() == 0
    assert (completion == encoder.image_token_id).sum() > 0
    assert tool_mask.sum(1).tolist() == [r.num_generated for r in rollouts]
    assert batch["num_images"] == [len(r.pixel_values) for r in rollouts]

    ids = torch.cat([batch["prompt_ids"], completion], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    trainer.model.eval()
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            ids,
            mask,
            completion.size(1),
            batch_size=2,
            pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"],
            num_images=batch["num_images"],
            mm_token_type_ids=batch["mm_token_type_ids"],
        )
    sampled = tool_mask.bool()
    assert torch.allclose(logps[sampled], batch["old_per_token_logps"][sampled], atol=2e-4), (
        (logps[sampled] - batch["old_per_token_logps"][sampled]).abs().max()
    )


def test_the_loss_has_gradient_from_differing_rewards_and_none_from_an_equal_reward_group(
    tiny_dir, rows, tmp_path
):
    trainer, encoder, engine = _trainer_and_engine(tiny_dir, rows, tmp_path)
    rollouts = start_group(engine, rows[0], VISION, 2, 0)
    for r in rollouts:
        engine.force_turn(r, CROP)
    engine.run(rollouts)
    batch = pack_rollouts(rollouts, encoder, "cpu")
    batch["ref_per_token_logps"] = trainer.reference_logps(
        batch
    )  # the frozen initial policy: so far the same weights

    def grads(advantages):
        trainer.model.zero_grad()
        batch["advantages"] = torch.tensor(advantages)
        trainer.compute_loss(trainer.model, batch).backward()
        return {n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}

    varied = grads([1.0, -1.0])
    assert any(g is not None and g.abs().sum() > 0 for g in varied.values())
    assert not any("visual" in n for n in varied)  # the frozen vision tower is not trained
    equal = grads([0.0, 0.0])
    assert all(g is None or g.abs().sum() == 0 for g in equal.values())


def test_a_transcript_is_the_rollouts_trajectory_as_markdown(tiny_dir, rows):
    """RL transcripts read the trajectory (as eval rows store it), not the rollout's own bookkeeping."""
    from videor4.rumination.trajectory import Trajectory
    from videor4.train.grpo import transcript

    policy = load_policy(tiny_dir)
    engine = RolloutEngine(
        policy.model,
        PolicyEncoder(policy.tokenizer, policy.image_processor),
        RolloutSettings(max_tool_calls=3),
    )
    r = start_group(engine, rows[0], VISION, 1, 0)[0]
    for text in (CLIP, "<tool_call>{oops</tool_call>", "It reads \\boxed{ABC}"):
        engine.force_turn(r, text)
    traj = Trajectory.from_dict(json.loads(json.dumps(r.to_trajectory().to_dict())))
    text = transcript(traj, 0.5)
    assert text == transcript(r.to_trajectory(), 0.5)
    lines = text.splitlines()
    assert lines[0] == f"### {rows[0]['sample_id']}  (reward 0.500)"
    assert text.split("\n", 1)[1].startswith(f"**Q:** {traj.question}")  # a question may span lines
    assert [line for line in lines if line.startswith("**turn ")] == [
        "**turn 1**",
        "**turn 2**",
        "**turn 3**",
    ]
    assert "→ clipping: Here are the selected frames 1, 3 at higher resolution (images 7 to 8):" in lines
    assert (
        "→ invalid call: Execution error: tool call is not valid JSON "
        "(Expecting property name enclosed in double quotes at char 1)" in lines
    )
    assert "It reads \\boxed{ABC}" in lines and lines[-1] == "**answer:** 'ABC' (answer)"


def test_train_grpo_reports_held_out_rewards_and_equal_reward_groups_give_no_gradient(
    tiny_dir, small_built, tmp_path
):
    """The untrained policy never ends a turn within 8 tokens: every rollout scores the same, so
    every group has zero variance, is counted, and leaves the weights exactly as they were.
    (That a policy with varied rewards does move is checked on the pipeline's rl_d stage.)"""
    logged: list[tuple[dict, int]] = []
    samples: list[int] = []
    settings = GRPOSettings(steps=2, updates_per_batch=2, learning_rate=1e-3, save_steps=1, **TINY_RL)
    out = tmp_path / "rl"
    metrics, curve, transcripts = train_grpo(
        small_built / "rl_d.jsonl",
        small_built / "samples_test.jsonl",
        tiny_dir,
        out,
        tmp_path / "work",
        model_config(SMALL_PARAMS),
        settings,
        RolloutSettings(max_tool_calls=2),
        RewardConfig(),
        VISION,
        log_fn=lambda values, step: logged.append((dict(values), step)),
        on_samples=lambda step, texts: samples.append(step),
    )
    for key in (
        "reward_start",
        "reward_end",
        "accuracy_start",
        "accuracy_end",
        "kl_last",
        "clip_calls_per_rollout",
        "crop_calls_per_rollout",
        "invalid_call_rate",
        "seconds",
        "zero_variance_groups",
    ):
        assert key in metrics, key
    assert metrics["steps"] == 2 and metrics["held_out"]["prompts"] == 2
    assert 0 <= metrics["invalid_call_rate"] <= 1 and metrics["accuracy_end"] >= 0
    assert curve and "reward" in curve[0] and "rewards/format" in curve[0]
    keys = set().union(*(values for values, _ in logged))
    for key in (
        "train/reward",
        "train/accuracy",
        "train/kl",
        "train/clip_ratio/region_mean",
        "train/tools/clip_calls_per_rollout",
        "train/tools/crop_calls_per_rollout",
        "train/tools/invalid_call_rate",
        "train/response_length",
        "train/rumination_steps",
        "train/frac_reward_zero_std",
        "train/rewards/curiosity",
    ):
        assert key in keys, key
    assert samples and transcripts["before"] and transcripts["after"][0].startswith("### ")
    assert metrics["zero_variance_groups"] == 2 and all(p["frac_reward_zero_std"] == 1.0 for p in curve)
    before, after = load_policy(tiny_dir).model.state_dict(), load_policy(out).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "work").exists()


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_dir, small_built, tmp_path):
    class Crash(RuntimeError):
        pass

    def crash_at_step_3(step, texts):
        if step == 3:
            raise Crash  # after checkpoint-2 was written, before step 3's

    args = (
        small_built / "rl_d.jsonl",
        small_built / "samples_test.jsonl",
        tiny_dir,
        tmp_path / "rl",
        tmp_path / "work",
        model_config(SMALL_PARAMS),
        GRPOSettings(steps=4, save_steps=1, **TINY_RL),
        RolloutSettings(max_tool_calls=2),
        RewardConfig(),
        VISION,
    )
    with pytest.raises(Crash):
        train_grpo(*args, on_samples=crash_at_step_3)
    assert (tmp_path / "work" / "checkpoint-2").is_dir() and not (tmp_path / "rl").exists()
    metrics, curve, _ = train_grpo(*args)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    assert [p["step"] for p in curve] == [1, 2, 3, 4]  # the history survives the crash


def test_bad_prompt_files_are_refused_with_the_file_and_row_named(tmp_path):
    from videor4.train.grpo import RLDataError, load_prompts

    missing_answers = tmp_path / "bad.jsonl"
    missing_answers.write_text(json.dumps({"sample_id": "x", "question": "Q?", "video": "v.mp4"}) + "\n")
    with pytest.raises(RLDataError, match=r"bad\.jsonl, row 1: not a sample"):
        load_prompts(missing_answers)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RLDataError, match="holds no prompts"):
        load_prompts(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:1: not valid JSON"):
        load_prompts(broken)
