"""Stage base_model: the policy the curriculum starts from.

`model.name_or_path: tiny` builds the embedded default here (tokenizer trained on
the built trajectories, Qwen2.5-VL architecture from `model.tiny`) and saves a
Hugging Face checkpoint.  Any other value (a Hub id or a local path) is recorded
as a reference, so lineage names the exact base without copying its weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.common import fail, load_params, stage_run, write_metrics  # noqa: E402

STAGE = "base_model"
OUT = Path("models/base")
CORPUS = [Path("data/built/sft_drp.jsonl"), Path("data/built/sft_crp.jsonl")]


def main() -> None:
    from videor4.config import model_config
    from videor4.io import atomic_dir
    from videor4.model import TINY, ModelLoadError, build_tiny_checkpoint, describe, load_policy, write_reference

    params = load_params()
    cfg = model_config(params)
    with stage_run(STAGE, params) as run:
        try:
            with atomic_dir(OUT) as tmp:
                if cfg.name_or_path == TINY:
                    policy = build_tiny_checkpoint(cfg.tiny, CORPUS, tmp, seed=int(params.get("seed", 0)))
                else:
                    # load once so a wrong id or path fails here, not three stages later
                    policy = load_policy(cfg.name_or_path, dtype="bfloat16", revision=cfg.revision)
                    write_reference(tmp, cfg.name_or_path, cfg.revision)
        except (ModelLoadError, ValueError, OSError) as exc:
            fail(STAGE, exc)
        metrics = {**describe(policy.model), "tokenizer_size": len(policy.tokenizer), "source": cfg.name_or_path}
        write_metrics(STAGE, metrics, run)


if __name__ == "__main__":
    main()
