"""The batched multi-turn rollout engine on a real tiny policy and real videos."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from conftest import SMALL_PARAMS
from videor4.policy.encoding import IGNORE_INDEX, PolicyEncoder
from videor4.policy.model import VISION_PLACEHOLDERS, load_policy
from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
from videor4.rumination.tools import VisionConfig
from videor4.rumination.trajectory import Trajectory, image_digest, replay
from videor4.rumination.video import FrameCache

FINISH = {"answer", "no_answer", "max_tool_calls", "max_images", "token_budget", "truncated"}
CROP = (
    'Zoom in.\n<tool_call>\n{"name": "cropping", '
    '"arguments": {"target_image": 2, "bbox_2d": [0.1, 0.1, 0.6, 0.6]}}\n</tool_call>'
)
CLIP = 'Look.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [1, 3]}}\n</tool_call>'


@pytest.fixture(scope="module")
def policy(tiny_dir):
    torch.manual_seed(0)
    return load_policy(tiny_dir)


@pytest.fixture(scope="module")
def samples(small_built):
    return [json.loads(line) for line in (small_built / "rl_c.jsonl").read_text().splitlines()][:2]


VISION = VisionConfig.from_dict(SMALL_PARAMS["vision"])


def engine(policy, **kw) -> RolloutEngine:
    settings = RolloutSettings(**{"max_new_tokens": 12, "max_tool_calls": 3, "temperature": 1.0, **kw})
    return RolloutEngine(policy.model, PolicyEncoder(policy.tokenizer, policy.image_processor), settings)


def test_groups_of_rollouts_always_finish_and_record_their_tokens(policy, samples):
    eng = engine(policy, batch_size=5)
    rollouts = [r for i, s in enumerate(samples) for r in start_group(eng, s, VISION, 4, i)]
    eng.run(rollouts)
    assert len(rollouts) == 8
    for r in rollouts:
        assert r.finish_reason in FINISH
        assert len(r.input_ids) == len(r.completion_mask) == len(r.logprobs)
        assert r.num_generated > 0 and r.completion_mask[: r.prompt_length] == [0] * r.prompt_length
        assert len(r.turns) >= 1 and len(r.pixel_values) == len(r.image_grid_thw) >= VISION.num_frames
        assert all(lp <= 0 for lp, m in zip(r.logprobs, r.completion_mask) if m)


def test_forced_calls_execute_with_the_shared_ops_and_garbage_never_crashes(policy, samples):
    eng = engine(policy, max_tool_calls=3, temperature=0.0)
    r = start_group(eng, samples[0], VISION, 1, 0)[0]
    eng.force_turn(r, CLIP)
    eng.force_turn(r, CROP)
    eng.force_turn(r, "<tool_call>{not json</tool_call>")
    assert [op.tool for op in r.ops] == ["clipping", "cropping", None]
    assert r.ops[0].error is None and len(r.ops[0].images) == 2 and [p for p, _ in r.ops[0].regions] == [0, 2]
    assert r.ops[1].error is None and len(r.ops[1].images) == 1
    assert "not valid JSON" in r.ops[2].error
    n_images = VISION.num_frames + 3
    assert len(r.pixel_values) == n_images
    assert sum(1 for t in r.input_ids if t == eng.encoder.image_token_id) == sum(
        int(g.prod()) // 4 for g in r.image_grid_thw
    )
    assert r.completion_mask.count(1) == 0  # forced turns are not the policy's tokens
    assert not r.done
    eng.force_turn(r, CROP)  # a fourth call: over max_tool_calls, the rollout ends without executing it
    assert r.finish_reason == "max_tool_calls" and len(r.ops) == 3


def test_limits_end_rollouts(policy, samples):
    eng = engine(policy, max_images=VISION.num_frames + 2)
    r = start_group(eng, samples[0], VISION, 1, 0)[0]
    eng.force_turn(r, CLIP)
    assert r.finish_reason == "max_images"
    eng = engine(policy, max_total_tokens=1)
    r = eng.run(start_group(eng, samples[0], VISION, 1, 0))[0]
    assert r.finish_reason == "token_budget"


def test_trainer_logprobs_equal_the_sampling_time_logprobs(policy, samples):
    """A full forward over the multi-turn sequence (observation images included) gives back the
    log-probabilities recorded while sampling, for the same weights."""
    eng = engine(policy, max_new_tokens=10, temperature=0.7)
    rollouts = start_group(eng, samples[1], VISION, 3, 0)
    for r in rollouts:
        eng.force_turn(r, CROP)  # so the sampled turns come after an image observation
    eng.run(rollouts)
    model = policy.model.eval()
    for r in rollouts:
        ids = torch.tensor([r.input_ids])
        with torch.no_grad():
            logits = (
                model(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    mm_token_type_ids=(ids == eng.encoder.image_token_id).long(),
                    pixel_values=torch.cat(r.pixel_values),
                    image_grid_thw=torch.stack(r.image_grid_thw),
                )
                .logits[0]
                .float()
            )
        logps = torch.log_softmax(logits[:-1] / 0.7, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        mask = torch.tensor(r.completion_mask[1:], dtype=torch.bool)
        assert mask.sum() > 0
        recorded = torch.tensor(r.logprobs[1:])[mask]
        assert torch.allclose(logps[mask], recorded, atol=2e-4), (logps[mask] - recorded).abs().max()
    assert IGNORE_INDEX == -100


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_the_policy_never_writes_a_vision_placeholder(policy, samples, temperature):
    """Pixels enter only through observations: a sampled <|image_pad|> would ask the trainer's forward
    pass for image features no image has.  Pushed to prefer it, the policy still never writes one."""
    image_pad = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def prefer_image_pad(module, inputs, output):
        output = output.clone()
        output[..., image_pad] += 1e4
        return output

    hook = policy.model.lm_head.register_forward_hook(prefer_image_pad)
    try:
        eng = engine(policy, max_new_tokens=6, temperature=temperature)
        rollouts = start_group(eng, samples[0], VISION, 2, 0)
        eng.run(rollouts)
    finally:
        hook.remove()
    placeholders = {policy.tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS}
    assert len(placeholders) == 5 and image_pad in placeholders
    for r in rollouts:
        written = [t for t, m in zip(r.input_ids, r.completion_mask) if m]
        assert written and not placeholders & set(written)


def test_cached_turns_equal_a_full_recompute(policy, samples):
    """Turns decoded from the KV cache kept between turns (with a left-padded batch of rollouts
    at different lengths and new observation images) equal those of a from-scratch recompute."""
    eng = engine(policy, temperature=0.0, max_new_tokens=6)
    fresh = engine(policy, temperature=0.0, max_new_tokens=6, reuse_cache=False)
    a, b = start_group(eng, samples[0], VISION, 2, 0)
    eng.force_turn(b, CLIP)  # b is longer and has two more images
    for _ in range(2):
        expected = fresh._decode([dataclasses.replace(r, kv=None) for r in (a, b)])
        got = eng._decode([a, b])
        for (ids, lps), (want_ids, want_lps) in zip(got, expected):
            assert ids == want_ids
            assert torch.allclose(torch.tensor(lps), torch.tensor(want_lps), atol=2e-4)
        assert a.kv is not None and a.kv.length == len(a.input_ids) + len(got[0][0]) - 1
        for r, (ids, lps) in zip((a, b), got):
            # end each turn at a (garbage) tool call, so the rollout goes on with an observation
            eng._advance(r, ids + [eng.call_close_id], lps + [0.0])
            assert not r.done and r.ops[-1].error is not None


def test_an_external_decoder_drives_the_same_tools_and_bookkeeping(policy, samples):
    """The generation seam a serving engine (e.g. vLLM) would fill: the engine hands over each
    live rollout's tokens and images and gets back one turn each; tools and limits stay shared."""
    script = [CLIP, "It reads \\boxed{ABC}"]
    seen: list[tuple[int, int]] = []

    def serve(chunk):
        out = []
        for r in chunk:
            seen.append((len(r.input_ids), len(r.pixel_values)))
            text = script[len(r.turns)]
            ids = eng.encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not text.endswith("</tool_call>"):
                ids.append(eng.encoder.end_of_turn_id)
            out.append((ids, [-0.5] * len(ids)))
        return out

    eng = RolloutEngine(
        policy.model,
        PolicyEncoder(policy.tokenizer, policy.image_processor),
        RolloutSettings(max_new_tokens=64, max_tool_calls=3),
        decode_turns=serve,
    )
    r = eng.run(start_group(eng, samples[0], VISION, 1, 0))[0]
    assert r.finish_reason == "answer" and r.answer == "ABC"
    assert [op.tool for op in r.ops] == ["clipping"] and r.ops[0].error is None and len(r.ops[0].images) == 2
    # the second call saw the clip's observation: more tokens and two more images
    assert len(seen) == 2 and seen[1][0] > seen[0][0] and seen[1][1] == seen[0][1] + 2
    generated = [lp for lp, m in zip(r.logprobs, r.completion_mask) if m]
    assert generated and set(generated) == {-0.5}  # the server's logprobs are kept for the trainer


def test_a_rollout_is_told_the_clip_limit_its_tools_enforce(policy, samples):
    import dataclasses

    vision = dataclasses.replace(VISION, max_frames_per_clip=2)
    r = start_group(engine(policy), samples[0], vision, 1, 0)[0]
    assert "(at most 2)" in r.messages[0]["content"][0]["text"]


def test_a_rollout_is_a_trajectory_that_round_trips_and_replays(policy, samples):
    """A model's rollout in the format synthesis writes: its turns as written (a malformed call and
    a refused one included), observation sha256s instead of PNG files; loaded back from JSON, replay
    against the video reproduces every observation, the image-budget refusal too."""
    eng = engine(policy, max_tool_calls=5, max_images=VISION.num_frames + 3)
    forced = start_group(eng, samples[0], VISION, 1, 0)[0]
    for text in (
        CLIP,
        CLIP,
        "<tool_call>{not json</tool_call>",
        CROP,
    ):  # the second clip is over the image budget
        eng.force_turn(forced, text)
    assert forced.finish_reason == "max_images"
    sampled = start_group(eng, samples[1], VISION, 1, 1)[0]
    eng.force_turn(sampled, CROP)
    eng.run([sampled])  # the policy's own turns to the end

    for r in (forced, sampled):
        traj = r.to_trajectory()
        row = json.loads(json.dumps(traj.to_dict()))
        loaded = Trajectory.from_dict(row)
        assert loaded == traj and loaded.to_dict() == row
        assert (
            traj.kind == "rollout"
            and traj.sample_id == r.sample["sample_id"]
            and traj.finish_reason == r.finish_reason
        )
        assert traj.final_answer == r.answer and traj.turn_texts() == r.turns
        assert [s.text for s in traj.steps] == r.turns[: len(r.ops)]
        assert all(not s.images for s in traj.steps)  # no PNG files: sha256s only
        assert [s.image_sha256 for s in traj.steps] == [
            [image_digest(im) for im in op.images] for op in r.ops
        ]
        result = replay(loaded, cache=FrameCache())
        assert result.ok, result.problems

    traj = Trajectory.from_dict(json.loads(json.dumps(forced.to_trajectory().to_dict())))
    assert traj.tools_used() == ["clipping", "clipping", None, "cropping"]
    assert [len(s.image_sha256) for s in traj.steps] == [2, 0, 0, 1]
    assert traj.steps[1].error.startswith("image budget exhausted")
    assert (
        traj.steps[2].tool_call is None
        and "not valid JSON" in traj.steps[2].error
        and "{not json" in traj.steps[2].text
    )
    assert traj.steps[2].observation_text == f"Execution error: {traj.steps[2].error}"
    assert traj.final_text is None and traj.final_answer is None and traj.max_images == VISION.num_frames + 3
    # replay checks what it re-executes: without the budget the refused clip would succeed
    assert any("step 1:" in p for p in replay(dataclasses.replace(traj, max_images=None)).problems)
    traj.steps[3].image_sha256 = ["0" * 64]
    assert replay(traj).problems == ["step 3: observation images differ (1 vs 1 stored)"]


def test_rollouts_use_no_transformers_api_that_is_going_away(policy, samples, caplog):
    """The engine's KV caches are transformers' current Cache API: a rollout that prefills, decodes
    in batches, executes tools and decodes again draws no FutureWarning or DeprecationWarning (raised
    in transformers or pointed at our call) and no deprecation notice on transformers' logger."""
    import logging
    import warnings

    eng = engine(policy, batch_size=4, temperature=0.0)
    rollouts = start_group(eng, samples[0], VISION, 2, 0) + start_group(eng, samples[1], VISION, 2, 1)
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.WARNING, logger="transformers"),
    ):
        warnings.simplefilter("always")
        eng.force_turn(rollouts[0], CLIP)  # a cached turn extended by an observation
        eng.run(rollouts)
    going = [
        w
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
        and ("transformers" in w.filename or "videor4" in w.filename)
    ]
    assert not going, [f"{w.filename}:{w.lineno}: {w.message}" for w in going]
    notices = [
        r.getMessage()
        for r in caplog.records
        if re.search(r"deprecat|will be removed|no longer supported", r.getMessage(), re.I)
    ]
    assert not notices, notices
    assert all(r.done for r in rollouts)
