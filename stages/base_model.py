"""Stage base_model: the policy the curriculum starts from.

    python stages/base_model.py --corpus data/built/tokenizer_corpus.jsonl --out models/base \
        --metrics metrics/base_model.json

`model.name_or_path: tiny` builds the embedded default here (tokenizer trained on
the trajectories in `--corpus`: the SFT sets of a build at `data.tokenizer_corpus`'s sizes,
whatever `data.sizes` are; Qwen2.5-VL architecture from `model.tiny`) and
saves a Hugging Face checkpoint.  Any other value (a Hub id or a local path) is
recorded as a reference, so lineage names the exact base without copying its weights.
"""

from __future__ import annotations

from videor4.pipeline.runner import one_line_errors, stage_inputs, stage_run, write_metrics

STAGE = "base_model"


def main() -> None:
    args, params = stage_inputs(__doc__, "corpus+", "out", "metrics")
    from videor4.core.io import atomic_dir
    from videor4.policy.model import (
        TINY,
        ModelLoadError,
        build_tiny_checkpoint,
        describe,
        load_policy,
        model_config,
        write_reference,
    )

    with one_line_errors(STAGE):
        cfg = model_config(params)
    with stage_run(STAGE, params) as run:
        with one_line_errors(STAGE, ModelLoadError, ValueError, OSError), atomic_dir(args.out) as tmp:
            if cfg.name_or_path == TINY:
                policy = build_tiny_checkpoint(cfg.tiny, args.corpus, tmp, seed=int(params.get("seed", 0)))
            else:
                # load once so a wrong id or path fails here, not three stages later
                policy = load_policy(cfg.name_or_path, dtype="bfloat16", revision=cfg.revision)
                write_reference(tmp, cfg.name_or_path, cfg.revision)
        metrics = {
            **describe(policy.model),
            "tokenizer_size": len(policy.tokenizer),
            "source": cfg.name_or_path,
        }
        write_metrics(args.metrics, metrics, run)


if __name__ == "__main__":
    main()
