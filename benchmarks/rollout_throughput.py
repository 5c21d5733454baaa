"""Batched rumination rollouts vs one rollout at a time, same model, same prompts, one run.

    python benchmarks/rollout_throughput.py [--init models/drp_sft] [--prompts 4] [--group 8]

For each prompt of data/built/rl_d.jsonl, G rollouts run through the shared
engine twice: all together (batched: the G rollouts of every prompt advance
as one batch, finished ones leave it) and one at a time (batch size 1).  Reports
rollouts/s, generated tokens/s and the speed-up.  Sampling is seeded identically
for both, so the work is comparable (not identical: sampled turns differ).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", type=Path, default=ROOT / "models/drp_sft")
    ap.add_argument("--data", type=Path, default=ROOT / "data/built/rl_d.jsonl")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8, help="rollouts per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args()

    import torch

    from videor4.core.io import read_jsonl
    from videor4.policy.encoding import PolicyEncoder
    from videor4.policy.model import load_policy
    from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
    from videor4.rumination.tools import vision_config

    if not args.init.exists():
        sys.exit(f"{args.init} does not exist: run `dvc repro drp_sft` first")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    vision = vision_config(params)
    policy = load_policy(args.init)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    samples = list(read_jsonl(args.data))[: args.prompts]
    rollout = dict(params.get("rollout") or {})

    def run(batch_size: int) -> dict:
        settings = RolloutSettings(
            max_tool_calls=int(rollout.get("max_tool_calls", 5)),
            max_images=int(rollout.get("max_images", 16)),
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            top_p=0.95,
            batch_size=batch_size,
        )
        engine = RolloutEngine(policy.model, encoder, settings)
        torch.manual_seed(0)
        rollouts = [r for i, s in enumerate(samples) for r in start_group(engine, s, vision, args.group, i)]
        t0 = time.perf_counter()
        engine.run(rollouts)
        seconds = time.perf_counter() - t0
        generated = sum(r.num_generated for r in rollouts)
        return {
            "batch_size": batch_size,
            "rollouts": len(rollouts),
            "seconds": round(seconds, 2),
            "rollouts_per_second": round(len(rollouts) / seconds, 3),
            "generated_tokens_per_second": round(generated / seconds, 1),
            "tool_calls_per_rollout": round(sum(len(r.ops) for r in rollouts) / len(rollouts), 2),
            "turns_per_rollout": round(sum(len(r.turns) for r in rollouts) / len(rollouts), 2),
        }

    batched = run(args.group * len(samples))
    single = run(1)
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "model": str(args.init),
        "prompts": len(samples),
        "group": args.group,
        "batched": batched,
        "one_at_a_time": single,
        "speedup_rollouts_per_second": round(
            batched["rollouts_per_second"] / single["rollouts_per_second"], 2
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
