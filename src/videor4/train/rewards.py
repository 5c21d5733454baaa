"""The Video-R4 rewards (docs/DESIGN.md §3), as plain functions with a name → function table.

Every reward takes the rollouts of one batch and a `RewardContext` and returns one
float per rollout.  Rollouts are duck-typed: a reward reads `answer`, `sample`
(answers, problem_type, options), `ops` (tool, error, regions, images),
`turns`, `finish_reason`, `prompt_id` (the group) and, for representativeness,
`env.initial_images()`.  Constants come from `reward:` in params.yaml.

    R = R_acc + R_fmt + λ_div·R_div + λ_rep·R_rep + λ_cur·R_cur
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from videor4.core.params import fill, section
from videor4.core.scoring import score_answer
from videor4.rumination.protocol import count_boxed, parse_turn


@dataclass
class RewardConfig:
    """`reward:` in params.yaml.  Peer constants: H 0.3, N 1, β 0.05, bonus cap 0.25."""

    lambda_div: float = 0.1
    lambda_rep: float = 0.1
    lambda_cur: float = 1.0
    alpha: float = 1.0  # curiosity bonus scale
    H: float = 0.3  # target share of a group's rollouts that use a tool
    N: int = 1  # calls allowed before each extra call costs β
    beta: float = 0.05
    bonus_cap: float = 0.25
    open_answer_metric: str = "anls"  # anls | acc (exact match)
    zero_accuracy_on_unfixed_error: bool = True  # peers: a failed op never fixed voids the answer


# A batch-level feature function: images → (n, d) tensor of pooled vision features.
Features = Callable[[Sequence[Any]], Any]


@dataclass
class RewardContext:
    config: RewardConfig = field(default_factory=RewardConfig)
    features: Features | None = None  # needed by diversity and representativeness


# ---------------------------------------------------------------- the rewards
def accuracy(rollouts: Sequence[Any], ctx: RewardContext) -> list[float]:
    """ANLS (or exact match) for open answers, the option letter for multiple choice."""
    out = []
    for r in rollouts:
        s = r.sample
        score = score_answer(
            r.answer, s["answers"], s.get("problem_type", "open"), len(s.get("options") or []) or 4
        )
        value = score["anls"] if ctx.config.open_answer_metric == "anls" else score["acc"]
        if ctx.config.zero_accuracy_on_unfixed_error and _unfixed_error(r.ops):
            value = 0.0
        out.append(float(value))
    return out


def _unfixed_error(ops: Sequence[Any]) -> bool:
    """An op failed and no op after it succeeded, i.e. the last op failed."""
    return bool(ops) and ops[-1].error is not None


def format_reward(rollouts: Sequence[Any], ctx: RewardContext) -> list[float]:
    """1 when every tool call parsed and the rollout ended with exactly one `\\boxed{}` answer."""
    out = []
    for r in rollouts:
        calls_ok = all(op.tool is not None for op in r.ops)
        final = r.turns[-1] if r.turns else ""
        answered = (
            r.finish_reason == "answer" and count_boxed(final) == 1 and parse_turn(final).answer is not None
        )
        out.append(1.0 if calls_ok and answered else 0.0)
    return out


def diversity(rollouts: Sequence[Any], ctx: RewardContext) -> list[float]:
    """Mean pairwise cosine distance between the features of every region the rollout selected
    (sum over ordered pairs of 1 − cos, divided by |V|(|V|−1)); 0 with fewer than two regions."""
    import torch

    out = []
    for r in rollouts:
        images = [im for op in r.ops if op.error is None for im in op.images]
        if len(images) < 2:
            out.append(0.0)
            continue
        f = torch.nn.functional.normalize(_features(ctx, images).float(), dim=-1)
        cos = f @ f.T
        n = len(images)
        distance = (1.0 - cos).sum() - (1.0 - cos.diagonal()).sum()  # ordered pairs i != j
        out.append(float(distance) / (n * (n - 1)))
    return out


def representativeness(rollouts: Sequence[Any], ctx: RewardContext) -> list[float]:
    """exp(−mean over every shown frame of the distance to its nearest frame in the last clipping);
    0 without a successful clipping."""
    import torch

    out = []
    for r in rollouts:
        clips = [op for op in r.ops if op.tool == "clipping" and op.error is None]
        if not clips:
            out.append(0.0)
            continue
        frames = r.env.initial_images()
        selected = sorted({pos for pos, _ in clips[-1].regions})
        f = _features(ctx, frames).float()
        d = torch.cdist(f, f[selected])  # (all frames, selected frames)
        out.append(math.exp(-float(d.min(dim=1).values.mean())))
    return out


def curiosity(rollouts: Sequence[Any], ctx: RewardContext) -> list[float]:
    """Group-relative: rollouts that used a tool get α·max(H − RaPR, 0) (capped), where RaPR is the
    share of the group's rollouts that made at least one call; each call beyond N costs β."""
    c = ctx.config
    groups: dict[Any, list[Any]] = defaultdict(list)
    for r in rollouts:
        groups[r.prompt_id].append(r)
    rapr = {g: sum(1 for r in rs if r.ops) / len(rs) for g, rs in groups.items()}
    out = []
    for r in rollouts:
        bonus = min(c.alpha * max(c.H - rapr[r.prompt_id], 0.0), c.bonus_cap) if r.ops else 0.0
        out.append(bonus - c.beta * max(len(r.ops) - c.N, 0))
    return out


REWARDS: dict[str, Callable[[Sequence[Any], RewardContext], list[float]]] = {
    "accuracy": accuracy,
    "format": format_reward,
    "diversity": diversity,
    "representativeness": representativeness,
    "curiosity": curiosity,
}


def weights(config: RewardConfig) -> dict[str, float]:
    return {
        "accuracy": 1.0,
        "format": 1.0,
        "diversity": config.lambda_div,
        "representativeness": config.lambda_rep,
        "curiosity": config.lambda_cur,
    }


def score(rollouts: Sequence[Any], ctx: RewardContext) -> dict[str, list[float]]:
    """Every component (unweighted) and the weighted `total`, per rollout.  A component whose weight
    is 0 is not computed (so an ablation also skips its feature extraction)."""
    w = weights(ctx.config)
    parts = {name: (fn(rollouts, ctx) if w[name] else [0.0] * len(rollouts)) for name, fn in REWARDS.items()}
    parts["total"] = [sum(w[name] * parts[name][i] for name in REWARDS) for i in range(len(rollouts))]
    return parts


# ---------------------------------------------------------------- features
def _features(ctx: RewardContext, images: Sequence[Any]):
    if ctx.features is None:
        raise ValueError("this reward needs image features (RewardContext.features)")
    return ctx.features(images)


class VisionFeatures:
    """Pooled embeddings from the policy's own vision encoder (no grad), cached per image content.

    The cache is an LRU of at most `max_entries` features, all from one state of the tower's
    weights: an in-place change of a tower parameter (an optimizer step, load_state_dict) bumps
    its version counter, which empties the cache.  Updates that bypass the counters (DeepSpeed
    writes through `.data`) are covered by `on_optimizer_step`, which the GRPO trainer calls.
    """

    def __init__(self, model, image_processor, max_entries: int = 4096) -> None:
        from videor4.policy.model import vision_tower

        self.tower = vision_tower(model)
        self.image_processor = image_processor
        self.max_entries = max_entries
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0
        self._weights = self._weights_version()

    def _weights_version(self) -> tuple[tuple[int, int], ...]:
        # a swapped parameter changes its id; an in-place update, its version counter
        return tuple((id(p), p._version) for p in self.tower.parameters())

    def on_optimizer_step(self) -> None:
        """The weights may have moved: drop the features of a tower that trains (a frozen one keeps them)."""
        if any(p.requires_grad for p in self.tower.parameters()):
            self.cache.clear()

    def __call__(self, images: Sequence[Any]):
        import torch

        from videor4.rumination.trajectory import image_digest

        version = self._weights_version()
        if version != self._weights:
            self.cache.clear()
            self._weights = version
        keys = [image_digest(im) for im in images]
        found: dict[str, Any] = {}
        for k in dict.fromkeys(keys):
            if k in self.cache:
                self.cache.move_to_end(k)
                found[k] = self.cache[k]
        todo = [(k, im) for k, im in dict(zip(keys, images)).items() if k not in found]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            out = self.image_processor(images=[im.convert("RGB") for _, im in todo], return_tensors="pt")
            param = next(self.tower.parameters())
            with torch.no_grad():
                merged = self.tower(
                    out["pixel_values"].to(param.device, param.dtype),
                    grid_thw=out["image_grid_thw"].to(param.device),
                )
            merged = getattr(merged, "pooler_output", merged)  # transformers returns merged patch features
            sizes = [int(g.prod()) // self.image_processor.merge_size**2 for g in out["image_grid_thw"]]
            for (k, _), chunk in zip(todo, torch.as_tensor(merged).split(sizes)):
                found[k] = self.cache[k] = chunk.float().mean(dim=0).cpu()
            while len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        return torch.stack([found[k] for k in keys])


def reward_config(params: dict[str, Any]) -> RewardConfig:
    return fill(RewardConfig, section(params, "reward"), "reward")
