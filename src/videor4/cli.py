"""The `video-r4` command line.  Heavy libraries are imported inside commands so
`video-r4 --help` answers at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Video-R4: text-rich video reasoning with visual rumination.", no_args_is_help=True)
data_app = typer.Typer(help="Build, inspect and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

BUILT = Path("data/built")
SFT_SETS = ("sft_drp", "sft_crp")


def _die(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _params(path: Path) -> dict:
    import yaml

    if not path.is_file():
        _die(f"params file not found: {path}")
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def _progress(label: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False)
    return bar.update


@data_app.command("build")
def data_build(
    params: Path = typer.Option(Path("params.yaml"), help="Pipeline params."),
    out: Path = typer.Option(BUILT, help="Output folder."),
    synthetic_dir: Path = typer.Option(Path("data/synthetic"), help="Where the procedural videos live."),
    regenerate: bool = typer.Option(False, help="Regenerate the procedural videos even if present."),
) -> None:
    """Build the datasets outside DVC (the `build_data` stage does the same with tracking)."""
    from .config import build_config, section, synthetic_config
    from .data.build import (
        BuildError,
        build_datasets,
        load_m4vitevqa_source,
        load_synthetic_source,
        make_synthetic_source,
        validate_dataset,
    )
    from .validation import DataValidationError

    p = _params(params)
    data = section(p, "data")
    try:
        if data.get("source", "synthetic") == "synthetic":
            if regenerate or not (synthetic_dir / "samples.jsonl").is_file():
                cfg = synthetic_config(p)
                make_synthetic_source(synthetic_dir, cfg, _progress("videos", cfg.n_videos))
            source = load_synthetic_source(synthetic_dir)
        else:
            source = load_m4vitevqa_source(data.get("m4vitevqa") or {})
        metrics = build_datasets(source, build_config(p, out), validate=validate_dataset, progress=_progress)
    except (BuildError, DataValidationError, ValueError, OSError) as exc:
        _die(str(exc))
    typer.echo(json.dumps(metrics, indent=2))


@data_app.command("show")
def data_show(
    traj_id: str = typer.Argument(..., help="A trajectory id, e.g. drp-000003."),
    data_dir: Path = typer.Option(BUILT, help="Folder with sft_drp.jsonl / sft_crp.jsonl."),
    out: Path = typer.Option(None, help="PNG to write (default reports/render/<id>.png)."),
) -> None:
    """Render a trajectory: frames, crop boxes, steps and returned images, to a PNG."""
    from .io import read_jsonl
    from .render import render_trajectory
    from .trajectory import Trajectory

    found = None
    for name in SFT_SETS:
        path = data_dir / f"{name}.jsonl"
        if path.is_file():
            found = next((r for r in read_jsonl(path) if r.get("traj_id") == traj_id), None)
            if found:
                break
    if found is None:
        _die(f"no trajectory '{traj_id}' in {data_dir}/{{{','.join(SFT_SETS)}}}.jsonl (run `video-r4 data build` first?)")
    out = out or Path("reports/render") / f"{traj_id}.png"
    path = render_trajectory(Trajectory.from_dict(found), out)
    typer.echo(f"wrote {path}")


@data_app.command("validate")
def data_validate(
    path: Path = typer.Argument(..., help="A JSONL dataset."),
    dataset: str = typer.Option(..., help="Suite name: videos, samples, sft_drp, sft_crp, rl_d, rl_c."),
) -> None:
    """Check a dataset against its Great Expectations suite."""
    from .validation import validate_jsonl

    if not path.is_file():
        _die(f"file not found: {path}")
    report = validate_jsonl(path, dataset)
    typer.echo(report.summary())
    raise typer.Exit(0 if report.success else 1)


@data_app.command("replay")
def data_replay(
    traj_id: str = typer.Argument(..., help="A trajectory id."),
    data_dir: Path = typer.Option(BUILT, help="Folder with the trajectory sets."),
) -> None:
    """Re-execute a stored trajectory's tool calls and check every observation matches."""
    from .io import read_jsonl
    from .trajectory import Trajectory, replay

    for name in SFT_SETS:
        path = data_dir / f"{name}.jsonl"
        row = next((r for r in read_jsonl(path) if r.get("traj_id") == traj_id), None) if path.is_file() else None
        if row:
            result = replay(Trajectory.from_dict(row))
            typer.echo("replay ok: every observation matches" if result.ok else "\n".join(result.problems))
            raise typer.Exit(0 if result.ok else 1)
    _die(f"no trajectory '{traj_id}' in {data_dir}")


if __name__ == "__main__":
    app()
