"""Stage figures: the pipeline's pictures as PNG, for people and for MLflow.

    python stages/figures.py \
        --sft-curves metrics/pretrain_loss.json metrics/direct_sft_loss.json metrics/drp_sft_loss.json \
            metrics/crp_sft_loss.json \
        --rl-curves metrics/rl_d_curve.json metrics/rl_c_curve.json --eval metrics/eval.json \
        --out reports/figures

Training loss (pretraining, direct SFT, DRP-SFT, CRP-SFT), GRPO reward and accuracy per step (RL_d, RL_c),
the test-time scaling curve with its 95 % band and accuracy per checkpoint and mode with its
interval (`videor4.evaluation.figures`).  Written under `--out`, linked from
reports/eval_table.md, and logged to the stage's MLflow run with `log_figure`.
"""

from __future__ import annotations

from pathlib import Path

from videor4.pipeline.runner import one_line_errors, stage_inputs, stage_run

STAGE = "figures"


def _stage_name(path: Path) -> str:
    """A curve file's stage: drp_sft_loss.json → drp_sft, rl_d_curve.json → rl_d."""
    return path.stem.removesuffix("_loss").removesuffix("_curve")


def main() -> None:
    args, params = stage_inputs(__doc__, "sft-curves+", "rl-curves+", "eval", "out")
    from videor4.core.io import atomic_dir, read_json
    from videor4.evaluation.figures import pipeline_figures, save_png

    with one_line_errors(STAGE, ValueError, OSError, KeyError):
        sft = {_stage_name(p): read_json(p) for p in args.sft_curves}
        rl = {_stage_name(p): read_json(p) for p in args.rl_curves}
        figures = pipeline_figures(sft, rl, read_json(args.eval))
    import matplotlib.pyplot as plt

    with stage_run(STAGE, params) as run:
        with one_line_errors(STAGE, OSError), atomic_dir(args.out) as out:
            for name, fig in figures.items():
                save_png(fig, out / name)
        for name, fig in figures.items():
            run.log_figure(fig, f"figures/{name}")
            plt.close(fig)


if __name__ == "__main__":
    main()
