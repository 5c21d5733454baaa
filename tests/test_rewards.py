"""Each reward pinned on hand-built rollouts, edge cases included."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from videor4.train.rewards import (
    REWARDS,
    RewardConfig,
    RewardContext,
    VisionFeatures,
    accuracy,
    curiosity,
    diversity,
    format_reward,
    representativeness,
    score,
)

FULL = (0.0, 0.0, 1.0, 1.0)


def op(tool="cropping", error=None, regions=(), images=()):
    return SimpleNamespace(tool=tool, arguments={}, error=error, regions=list(regions), images=list(images))


def rollout(
    answer=None,
    ops=(),
    turns=None,
    finish="answer",
    answers=("K417",),
    problem_type="open",
    options=None,
    prompt_id=0,
    frames=(),
):
    turns = (
        turns
        if turns is not None
        else [f"It reads it.\n\\boxed{{{answer}}}" if answer is not None else "no idea"]
    )
    sample = {"answers": list(answers), "problem_type": problem_type, "options": options}
    env = SimpleNamespace(initial_images=lambda: list(frames))
    return SimpleNamespace(
        answer=answer,
        ops=list(ops),
        turns=turns,
        finish_reason=finish,
        sample=sample,
        prompt_id=prompt_id,
        env=env,
    )


def colour(v: float) -> Image.Image:
    return Image.new("RGB", (28, 28), (int(v), 0, 0))


def red_channel(images):
    """A transparent feature: each image's red level, as a 1-d vector."""
    return torch.tensor([[float(im.getpixel((0, 0))[0])] for im in images])


def onehot(images):
    """Orthogonal features for different red levels."""
    levels = sorted({im.getpixel((0, 0))[0] for im in images})
    return torch.tensor([[1.0 if im.getpixel((0, 0))[0] == lv else 0.0 for lv in levels] for im in images])


CTX = RewardContext(RewardConfig())


def test_accuracy_open_answers_multiple_choice_and_failed_ops():
    rs = [
        rollout("K417"),
        rollout("K41"),  # ANLS 1 - 1/4 = 0.75
        rollout("XXXX"),
        rollout(None, finish="no_answer"),
        rollout("B", answers=["B"], problem_type="multiple_choice", options=["1", "2", "3", "4"]),
        rollout("(C) 3", answers=["B"], problem_type="multiple_choice", options=["1", "2", "3", "4"]),
        rollout("K417", ops=[op(error="bbox_2d lies outside the image")]),  # failed and never fixed
        rollout("K417", ops=[op(error="out of range"), op()]),  # fixed by the next call
    ]
    assert accuracy(rs, CTX) == pytest.approx([1.0, 0.75, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    lenient = RewardContext(RewardConfig(zero_accuracy_on_unfixed_error=False, open_answer_metric="acc"))
    assert accuracy(rs, lenient) == pytest.approx([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])


def test_format_needs_parsed_calls_and_exactly_one_boxed_answer():
    rs = [
        rollout("K417", ops=[op()]),
        rollout("K417", ops=[op(tool=None, error="tool call is not valid JSON")]),
        rollout("K417", turns=["\\boxed{K417} or \\boxed{K41}"]),
        rollout(None, finish="no_answer"),
        rollout(None, ops=[op()] * 5, finish="max_tool_calls", turns=["<tool_call>..."]),
        rollout("K417", ops=[op(error="image 9 out of range")]),  # an executed call that failed still parsed
    ]
    assert format_reward(rs, CTX) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_diversity_is_mean_pairwise_cosine_distance_over_regions():
    ctx = RewardContext(RewardConfig(), features=onehot)
    rs = [
        rollout("x"),  # no tool call
        rollout("x", ops=[op(images=[colour(10)])]),  # one region
        rollout("x", ops=[op(images=[colour(10)]), op(images=[colour(20)])]),  # orthogonal: 1 − cos = 1
        rollout("x", ops=[op(images=[colour(10)]), op(images=[colour(10)])]),  # the same region twice
        rollout(
            "x", ops=[op(images=[colour(10)]), op(error="failed"), op(images=[colour(30)])]
        ),  # failed ops add none
    ]
    assert diversity(rs, ctx) == pytest.approx([0.0, 0.0, 1.0, 0.0, 1.0])
    three = rollout("x", ops=[op(images=[colour(10), colour(10)]), op(images=[colour(20)])])
    # pairs: (a,a') 0, (a,b) 1, (a',b) 1 — each ordered twice — over 3·2
    assert diversity([three], ctx) == pytest.approx([4 / 6])


def test_representativeness_rewards_clips_that_cover_the_video():
    ctx = RewardContext(RewardConfig(), features=red_channel)
    frames = [colour(0), colour(1), colour(3)]
    clip = lambda *pos: op("clipping", regions=[(p, FULL) for p in pos])  # noqa: E731
    rs = [
        rollout("x", frames=frames),  # no clipping
        rollout("x", ops=[clip(0, 1, 2)], frames=frames),  # every frame selected
        rollout("x", ops=[clip(0)], frames=frames),  # distances 0, 1, 3
        rollout("x", ops=[clip(2), clip(0)], frames=frames),  # only the last clipping counts
        rollout(
            "x", ops=[clip(1), op("clipping", error="frame 9 out of range")], frames=frames
        ),  # failed clip ignored
    ]
    got = representativeness(rs, ctx)
    assert got == pytest.approx([0.0, 1.0, math.exp(-4 / 3), math.exp(-4 / 3), math.exp(-3 / 3)])


def test_curiosity_is_relative_to_the_group():
    cfg = RewardConfig(alpha=1.0, H=0.3, N=1, beta=0.05, bonus_cap=0.25)
    ctx = RewardContext(cfg)
    # group 0: one of four rollouts uses a tool (RaPR 0.25) → bonus 0.05 for it
    g0 = [rollout("x", ops=[op()], prompt_id=0)] + [rollout("x", prompt_id=0) for _ in range(3)]
    # group 1: every rollout uses tools (RaPR 1) → no bonus; calls beyond N=1 cost 0.05 each
    g1 = [rollout("x", ops=[op()] * 3, prompt_id=1), rollout("x", ops=[op()], prompt_id=1)]
    assert curiosity(g0 + g1, ctx) == pytest.approx([0.05, 0.0, 0.0, 0.0, -0.1, 0.0])
    capped = RewardContext(RewardConfig(alpha=10.0))
    assert curiosity(g0, capped)[0] == pytest.approx(0.25)  # 10 · 0.05 = 0.5, capped


def test_total_is_the_weighted_sum_and_zero_weights_skip_their_reward():
    cfg = RewardConfig(lambda_div=0.5, lambda_rep=0.0, lambda_cur=2.0)
    ctx = RewardContext(cfg, features=onehot)
    rs = [
        rollout("K417", ops=[op(images=[colour(1)]), op(images=[colour(2)])], prompt_id=0),
        rollout("nope", prompt_id=0),
    ]
    parts = score(rs, ctx)
    assert set(parts) == set(REWARDS) | {"total"}
    for i in range(2):
        expect = (
            parts["accuracy"][i]
            + parts["format"][i]
            + 0.5 * parts["diversity"][i]
            + 2.0 * parts["curiosity"][i]
        )
        assert parts["total"][i] == pytest.approx(expect)
    assert parts["representativeness"] == [0.0, 0.0]  # weight 0: not computed (no frames were needed)
    # the curiosity ablation
    no_cur = score(rs, RewardContext(RewardConfig(lambda_cur=0.0), features=onehot))
    assert no_cur["curiosity"] == [0.0, 0.0]


def test_vision_features_come_from_the_policy_encoder_and_are_cached(tiny_dir):
    from videor4.policy.model import load_policy

    policy = load_policy(tiny_dir)
    feats = VisionFeatures(policy.model, policy.image_processor)
    images = [Image.new("RGB", (56, 56), (i * 60, 20, 200 - i * 60)) for i in range(3)]
    f = feats(images)
    assert f.shape == (3, policy.model.config.text_config.hidden_size)
    assert not torch.allclose(f[0], f[1])
    again = feats([images[1], images[0]])
    assert torch.allclose(again[0], f[1]) and feats.hits == 2 and feats.misses == 3


@pytest.fixture(scope="module")
def tiny_policy(tiny_dir):
    from videor4.policy.model import load_policy

    return load_policy(tiny_dir)


def _images(n: int) -> list:
    return [Image.new("RGB", (56, 56), (i * 40, 20, 200 - i * 40)) for i in range(n)]


def test_vision_features_cache_is_a_bounded_lru(tiny_policy):
    feats = VisionFeatures(tiny_policy.model, tiny_policy.image_processor, max_entries=2)
    a, b, c = _images(3)
    f = feats([a, b, c])  # more new images than the cache holds: all are still returned
    assert f.shape[0] == 3 and len(feats.cache) == 2
    assert torch.allclose(feats([c])[0], f[2]) and feats.hits == 1  # the most recent stay
    assert torch.allclose(feats([a])[0], f[0]) and feats.misses == 4  # the oldest was evicted
    assert len(feats.cache) == 2


def test_vision_features_are_recomputed_once_the_vision_tower_changes(tiny_dir):
    from videor4.policy.model import load_policy, vision_tower

    policy = load_policy(tiny_dir)  # its own copy: the weights are changed below
    feats = VisionFeatures(policy.model, policy.image_processor)
    (a,) = _images(1)
    before = feats([a])
    with torch.no_grad():  # what an optimizer step does to a trained tower: in place
        for p in vision_tower(policy.model).parameters():
            p.mul_(1.5)
    after = feats([a])
    assert feats.misses == 2 and not torch.allclose(before, after)
    assert torch.allclose(after, VisionFeatures(policy.model, policy.image_processor)([a]))
    # updates the version counters miss (DeepSpeed writes through .data): the trainer's step hook
    feats.on_optimizer_step()
    assert not feats.cache  # the tower trains (requires_grad), so its features are dropped
    for p in vision_tower(policy.model).parameters():
        p.requires_grad_(False)
    feats([a])
    feats.on_optimizer_step()
    assert len(feats.cache) == 1  # a frozen tower keeps its features across steps
