"""The `video-r4` command line.  Heavy libraries are imported inside commands so
`video-r4 --help` answers at once."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Video-R4: text-rich video reasoning with visual rumination.", no_args_is_help=True)
data_app = typer.Typer(help="Build, inspect and validate datasets.", no_args_is_help=True)
remote_app = typer.Typer(
    help="The DVC remote on S3 (params `storage:` or $VIDEOR4_S3_BUCKET): configure, check, push, pull.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
lineage_app = typer.Typer(help="The lineage DVC records: each stage's exact code deps.", no_args_is_help=True)
app.add_typer(remote_app, name="remote")
app.add_typer(lineage_app, name="lineage")

BUILT = Path("data/built")
SFT_SETS = ("sft_drp", "sft_crp")


def _die(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _params(path: Path) -> dict:
    from videor4.pipeline.lineage import load_params

    if not path.is_file():
        _die(f"params file not found: {path}")
    return load_params(path)


def _progress(label: str, total: int):
    from videor4.pipeline.runner import progress_bar

    return progress_bar(label, total)


@data_app.command("build")
def data_build(
    params: Path = typer.Option(Path("params.yaml"), help="Pipeline params."),
    out: Path = typer.Option(BUILT, help="Output folder."),
    synthetic_dir: Path = typer.Option(Path("data/synthetic"), help="Where the procedural videos live."),
    regenerate: bool = typer.Option(False, help="Regenerate the procedural videos even if present."),
) -> None:
    """Build the datasets outside DVC (the `build_data` stage does the same with tracking)."""
    from videor4.data.build import (
        BuildError,
        build_config,
        build_datasets,
        data_params,
        load_source,
        make_synthetic_source,
        validate_dataset,
    )
    from videor4.data.synthetic import synthetic_config
    from videor4.data.validation import DataValidationError

    p = _params(params)
    try:
        data = data_params(p)
        if data.source == "synthetic" and (regenerate or not (synthetic_dir / "samples.jsonl").is_file()):
            cfg = synthetic_config(p)
            make_synthetic_source(synthetic_dir, cfg, _progress("videos", cfg.n_videos))
        cfg = build_config(p, out)
        writer = None
        if data.cot.writer == "model":
            from videor4.policy.writer import thought_writer

            writer = thought_writer(data, cfg.cot)
        metrics = build_datasets(
            load_source(data, synthetic_dir),
            cfg,
            validate=validate_dataset,
            progress=_progress,
            writer=writer,
        )
    except (BuildError, DataValidationError, ValueError, OSError) as exc:
        _die(str(exc))
    typer.echo(json.dumps(metrics, indent=2))


def _find_trajectory(traj_id: str, data_dir: Path, file: Path | None):
    """The trajectory `traj_id` from `file` (a trajectory set, or eval predictions whose rows carry
    one under "trajectory", its id the question's sample id) or else from data_dir's SFT sets."""
    from videor4.core.io import read_jsonl
    from videor4.rumination.trajectory import Trajectory

    if file is not None:
        if not file.is_file():
            _die(f"file not found: {file}")
        paths = [file]
    else:
        paths = [p for p in (data_dir / f"{name}.jsonl" for name in SFT_SETS) if p.is_file()]
    for path in paths:
        try:
            rows = read_jsonl(path)
        except ValueError as exc:
            _die(str(exc))
        for row in rows:
            d = row.get("trajectory", row) if isinstance(row, dict) else None
            if isinstance(d, dict) and d.get("traj_id") == traj_id:
                try:
                    return Trajectory.from_dict(d)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    _die(f"malformed trajectory '{traj_id}' in {path}: {type(exc).__name__}: {exc}")
    where = (
        str(file)
        if file is not None
        else f"{data_dir}/{{{','.join(SFT_SETS)}}}.jsonl (run `video-r4 data build` first?)"
    )
    _die(f"no trajectory '{traj_id}' in {where}")


FILE_HELP = (
    "A JSONL of trajectories or of eval predictions (reports/eval/<ckpt>.<set>.<mode>.jsonl) "
    "to read instead of --data-dir."
)


@data_app.command("show")
def data_show(
    traj_id: str = typer.Argument(
        ..., help="A trajectory id, e.g. drp-000003, or an eval prediction's sample id."
    ),
    data_dir: Path = typer.Option(BUILT, help="Folder with sft_drp.jsonl / sft_crp.jsonl."),
    file: Path = typer.Option(None, help=FILE_HELP),
    out: Path = typer.Option(None, help="PNG to write (default reports/render/<id>.png)."),
) -> None:
    """Render a trajectory: frames, crop boxes, steps and returned images, to a PNG."""
    from videor4.app.render import render_trajectory
    from videor4.rumination.video import VideoError

    traj = _find_trajectory(traj_id, data_dir, file)
    try:
        path = render_trajectory(traj, out or Path("reports/render") / f"{traj_id}.png")
    except (VideoError, ValueError, OSError) as exc:
        _die(f"cannot render '{traj_id}': {' '.join(str(exc).split())}")
    typer.echo(f"wrote {path}")


@data_app.command("validate")
def data_validate(
    path: Path = typer.Argument(..., help="A JSONL dataset."),
    dataset: str = typer.Option(..., help="Suite name: videos, samples, sft_drp, sft_crp, rl_d, rl_c."),
) -> None:
    """Check a dataset against its Great Expectations suite."""
    from videor4.data.validation import validate_jsonl

    if not path.is_file():
        _die(f"file not found: {path}")
    report = validate_jsonl(path, dataset)
    typer.echo(report.summary())
    raise typer.Exit(0 if report.success else 1)


@data_app.command("replay")
def data_replay(
    traj_id: str = typer.Argument(..., help="A trajectory id, or an eval prediction's sample id."),
    data_dir: Path = typer.Option(BUILT, help="Folder with the trajectory sets."),
    file: Path = typer.Option(None, help=FILE_HELP),
) -> None:
    """Re-execute a stored trajectory's tool calls and check every observation matches."""
    from videor4.rumination.trajectory import replay
    from videor4.rumination.video import VideoError

    traj = _find_trajectory(traj_id, data_dir, file)
    try:
        result = replay(traj)
    except (VideoError, ValueError, OSError) as exc:
        _die(f"cannot replay '{traj_id}': {' '.join(str(exc).split())}")
    typer.echo("replay ok: every observation matches" if result.ok else "\n".join(result.problems))
    raise typer.Exit(0 if result.ok else 1)


@data_app.command("review")
def data_review(
    data_dir: Path = typer.Option(BUILT, help="Folder with the trajectory sets."),
    sets: list[str] = typer.Option(list(SFT_SETS), "--set", help="Trajectory sets to review (repeatable)."),
    limit: int = typer.Option(
        40, help="Review a seeded random sample of this many trajectories per set; 0 = all."
    ),
    seed: int = typer.Option(0, help="Seed of that sample."),
    decisions: Path = typer.Option(
        None, help="Decisions file, relative to the project root (default: params data.review.decisions)."
    ),
    params: Path = typer.Option(Path("params.yaml"), help="Pipeline params (for the decisions file)."),
    out: Path = typer.Option(Path("reports/review/index.html"), help="The page to write."),
    serve: bool = typer.Option(False, help="Serve the page; its Save button writes the decisions file."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on."),
    port: int = typer.Option(8765, help="Port to serve on (0: any free one)."),
) -> None:
    """Human QC: a self-contained HTML page to accept or reject trajectories; build_data drops the
    rejected."""
    from videor4.app.review import decisions_file, make_server, pick_rows, review_page
    from videor4.core.io import atomic_write_text, read_jsonl
    from videor4.data.review import load_decisions
    from videor4.rumination.video import VideoError

    if decisions is None:
        from videor4.core.params import ParamsError
        from videor4.data.build import data_params

        try:  # the build's own reading of `data:`, so both name the same file
            configured = data_params(_params(params)).review.decisions if params.is_file() else None
        except ParamsError as exc:
            _die(str(exc))
        decisions = Path(configured or "review/decisions.json")
    decisions = decisions_file(decisions)  # from the project root, as the server saves it
    rows = []
    for name in sets:
        if name not in SFT_SETS:
            _die(f"unknown trajectory set {name!r}; known: {', '.join(SFT_SETS)}")
        path = data_dir / f"{name}.jsonl"
        if not path.is_file():
            _die(f"file not found: {path} (run `dvc repro build_data` first)")
        try:
            rows += pick_rows(read_jsonl(path), limit or None, seed)
        except ValueError as exc:
            _die(" ".join(str(exc).split()))
    try:
        earlier = load_decisions(decisions) if decisions.is_file() else {}
        page = review_page(rows, earlier, f"Video-R4 trajectory review: {', '.join(sets)} from {data_dir}")
    except (VideoError, ValueError, OSError) as exc:
        _die(" ".join(str(exc).split()))
    atomic_write_text(out, page)
    typer.echo(f"wrote {out} ({len(rows)} trajectories); decisions file: {decisions}")
    if serve:
        server = make_server(page, decisions, host, port)
        typer.echo(f"serving on http://{host}:{server.server_address[1]}/  (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


@app.command("ask")
def ask(
    video: Path = typer.Argument(..., help="A video file (mp4, ...) or a folder of page images."),
    question: str = typer.Argument(..., help="The question to answer."),
    model: str = typer.Option(
        "models/rl_c", help="Checkpoint directory, runs:/<run id>/model or models:/<name>/<version>."
    ),
    params: Path = typer.Option(
        Path("params.yaml"), help="Vision config and rollout limits (defaults if absent)."
    ),
    max_steps: int = typer.Option(None, min=0, help="Tool-call budget (default: rollout.max_tool_calls)."),
    max_new_tokens: int = typer.Option(128, min=1, help="Tokens per turn."),
    temperature: float = typer.Option(0.0, min=0.0, help="Sampling temperature; 0 = greedy."),
    report: Path = typer.Option(None, help="HTML report to write (default reports/ask/<video-stem>.html)."),
) -> None:
    """Ruminate over a video: stream each step, print the answer, write an HTML report."""
    from videor4.app.ask import (
        AskError,
        default_report_path,
        load_model,
        open_env,
        open_source,
        ruminate,
        write_report,
    )

    vision, settings, tracking_uri = _ask_settings(params, max_steps, max_new_tokens, temperature)
    try:
        sample = open_source(video, question)
        env = open_env(sample, vision, max_images=settings.max_images)
        video_info = env.video
        typer.echo(
            f"{video}: {len(video_info.frames)} of {video_info.num_source_frames} frames shown "
            f"({video_info.width}x{video_info.height}); tool budget {settings.max_tool_calls}"
        )
        policy = load_model(model, tracking_uri=tracking_uri)
        rollout = ruminate(policy, sample, vision, settings, on_step=_print_step, env=env)
    except AskError as exc:
        _die(str(exc))
    except Exception as exc:  # noqa: BLE001  (e.g. an EncodingError: report it on one line)
        _die(f"rumination failed: {_first_line(exc)}")
    traj = rollout.to_trajectory()
    typer.secho(f"answer: {traj.final_answer if traj.final_answer is not None else '(none)'}", bold=True)
    typer.echo(f"finish: {traj.finish_reason} ({len(traj.turn_texts())} turns, {len(traj.steps)} tool calls)")
    try:
        path = write_report(traj, report or default_report_path(video), model=str(model))
    except OSError as exc:
        _die(f"cannot write the report: {exc}")
    typer.echo(f"report: {path}")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _ask_settings(params: Path, max_steps: int | None, max_new_tokens: int, temperature: float):
    """(vision config, rollout settings, tracking URI) for `ask`: params.yaml's, or the defaults."""
    import yaml

    from videor4.policy.rollout import RolloutSettings, rollout_limits
    from videor4.rumination.tools import VisionConfig, vision_config

    try:
        if params.is_file():
            p = _params(params)
            vision, limits = vision_config(p), rollout_limits(p)
        else:
            p, vision, limits = {}, VisionConfig(), RolloutSettings()
        tracking_uri = _tracking_uri(p)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        _die(f"bad params file {params}: {' '.join(str(exc).split())}")
    settings = RolloutSettings(
        max_tool_calls=limits.max_tool_calls if max_steps is None else max_steps,
        max_images=limits.max_images,
        max_new_tokens=max_new_tokens,
        max_total_tokens=limits.max_total_tokens,
        temperature=temperature,
        top_p=limits.top_p,
        batch_size=1,
        force_answer=True,
    )
    return vision, settings, tracking_uri


def _print_step(traj) -> None:
    """Print the newest turn of the trajectory so far (its thought, call and observation)."""
    from videor4.app.ask import call_text

    typer.secho(f"[step {len(traj.turn_texts())}]", bold=True)
    step = traj.steps[-1] if traj.final_text is None else None  # None: the turn made no executed call
    thought = step.thought if step is not None else traj.final_text.strip()
    for line in (thought or "(no text)").splitlines():
        typer.echo(f"  {line}")
    if step is not None:
        typer.echo(f"  -> {call_text(step)}")
        typer.secho(f"  <- {step.observation_text}", fg=typer.colors.RED if step.error is not None else None)


def _tracking_uri(params: dict) -> str:
    """Where `runs:/` and `models:/` are looked up: $MLFLOW_TRACKING_URI, params `tracking.uri`,
    ./mlflow.db."""
    from videor4.pipeline.runner import tracking_config

    return tracking_config(params).resolved_uri()


@app.command("eval")
def evaluate(
    model: str = typer.Option(
        ..., help="Checkpoint directory, runs:/<run id>/model or models:/<name>/<version>."
    ),
    eval_set: str = typer.Option(..., "--set", help="synthetic | m4vitevqa | mpdocvqa | slidesvqa | mcvqa."),
    root: Path = typer.Option(..., help="The set's folder (synthetic: data/built or a samples .jsonl file)."),
    mode: str = typer.Option("both", help="single_pass | rumination | both (both adds the scaling curve)."),
    max_steps: int = typer.Option(None, min=0, help="Rumination budget K (default: eval.max_steps)."),
    max_questions: int = typer.Option(
        None, help="Answer only the first N questions (default: eval.max_questions)."
    ),
    file: str = typer.Option(
        None, help="The annotation file under --root (default: the set's, as in params eval.sets)."
    ),
    subset: str = typer.Option(
        None, help="mcvqa: which benchmark (mvbench, videomme, ...; default mvbench)."
    ),
    predictions: Path = typer.Option(
        None, help="Per-question predictions (.jsonl; default reports/eval_cli/<model>.<set>.jsonl)."
    ),
    params: Path = typer.Option(
        Path("params.yaml"), help="Vision config, rollout limits and eval settings (defaults if absent)."
    ),
) -> None:
    """Evaluate one checkpoint on one eval set with the stage's engine and scoring: the table to stdout,
    predictions to a file."""
    from videor4.app.ask import AskError, check_checkpoint, checkpoint_path
    from videor4.core.io import write_jsonl
    from videor4.evaluation.evaluate import MODE_LABELS, EvalDataError, eval_set_from_root
    from videor4.pipeline.tracking import is_model_uri

    if mode not in ("both", *MODE_LABELS):
        _die(f"unknown mode {mode!r} (single_pass, rumination or both)")
    settings, vision, max_images, tracking_uri = _eval_settings(params, max_steps, max_questions)
    try:
        sets = eval_set_from_root(eval_set, root, settings, file=file, subset=subset)
        path = check_checkpoint(checkpoint_path(model, tracking_uri))
    except (EvalDataError, AskError) as exc:
        _die(str(exc))
    name = model if is_model_uri(model) else path.name
    try:
        rows = _evaluate_rows(name, path, sets, mode, vision, settings, max_images, eval_set)
    except Exception as exc:  # noqa: BLE001  (a checkpoint or video that fails: one line)
        _die(f"evaluation failed: {_first_line(exc)}")
    out = predictions or Path("reports/eval_cli") / f"{Path(name).name.replace(':', '_')}.{eval_set}.jsonl"
    try:
        write_jsonl(out, rows)
    except OSError as exc:
        _die(f"cannot write the predictions: {exc}")
    typer.echo(f"predictions: {out} ({len(rows)} records)")


def _eval_settings(params: Path, max_steps: int | None, max_questions: int | None):
    """(eval settings, vision config, max images, tracking URI) for `eval`, with the command's overrides."""
    import dataclasses

    import yaml

    from videor4.evaluation.evaluate import eval_settings
    from videor4.policy.rollout import rollout_limits
    from videor4.rumination.tools import vision_config

    try:
        p = _params(params) if params.is_file() else {}
        settings = eval_settings(p)
        if max_steps is not None:
            settings = dataclasses.replace(settings, max_steps=max_steps)
        if max_questions is not None:
            settings = dataclasses.replace(settings, max_questions=max_questions)
        vision, max_images = vision_config(p, settings.vision), rollout_limits(p).max_images
        return settings, vision, max_images, _tracking_uri(p)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        _die(f"bad params file {params}: {' '.join(str(exc).split())}")


def _evaluate_rows(name, path, sets, mode, vision, settings, max_images, eval_set) -> list[dict]:
    """Score the checkpoint in `mode` (both: the stage's table and scaling curve), print the table,
    return the per-question records."""
    from videor4.evaluation.evaluate import evaluate_checkpoint, evaluate_mode, format_cell_table, paper_table

    if mode == "both":
        result = evaluate_checkpoint(name, path, sets, vision, settings, max_images, _progress)
        typer.echo(paper_table([result], sets, settings.max_steps, title=f"{name} on {eval_set}"))
        return [
            {"set": s, "mode": m, **r}
            for s, modes in result.predictions.items()
            for m, recs in modes.items()
            for r in recs
        ]
    rows, cells = [], []
    for s in sets:
        progress = _progress(f"eval {s.name}", len(s.rows))
        cell, records = evaluate_mode(path, s, mode, vision, settings, max_images, progress)
        cells.append((s, cell))
        rows += [{"set": s.name, "mode": mode, **r} for r in records]
    typer.echo(format_cell_table(name, mode, cells))
    return rows


@remote_app.command("configure")
def remote_configure(
    local: bool = typer.Option(False, "--local", help="Write to .dvc/config.local (not committed)."),
    params: Path = typer.Option(Path("params.yaml"), help="Pipeline params (`storage:`)."),
) -> None:
    """Write the DVC remote (s3://bucket/prefix/dvc) into .dvc/config and make it the default."""
    from videor4.pipeline.remote import configure, remote_settings

    configure(remote_settings(_params_or_empty(params)), local)


@remote_app.command("check")
def remote_check(
    params: Path = typer.Option(Path("params.yaml"), help="Pipeline params (`storage:`)."),
) -> None:
    """Check the bucket can be reached, listed and written."""
    from videor4.pipeline.remote import check_remote, remote_settings

    check_remote(remote_settings(_params_or_empty(params)))


def _transfer_command(verb: str):
    def transfer(
        targets: list[str] = typer.Argument(None, help="DVC targets (default: everything)."),
        params: Path = typer.Option(Path("params.yaml"), help="Pipeline params (`storage:`)."),
    ) -> None:
        from videor4.pipeline.remote import remote_settings, transfer

        transfer(verb, remote_settings(_params_or_empty(params)), targets or [])

    transfer.__doc__ = f"Check the bucket, then `dvc {verb}`."
    return transfer


for _verb in ("push", "pull"):
    remote_app.command(_verb)(_transfer_command(_verb))


@lineage_app.command("deps")
def lineage_deps(
    write: bool = typer.Option(False, "--write", help="Rewrite the stages' deps in dvc.yaml."),
    dvc_yaml: Path = typer.Option(Path("dvc.yaml"), help="The pipeline file."),
) -> None:
    """Each stage's code deps are its script's import closure: list the stages whose dvc.yaml
    deps differ (exit 1), or with --write make them equal."""
    from videor4.pipeline.code_deps import stale_stages, write_code_deps

    root, name = dvc_yaml.resolve().parent, dvc_yaml.name
    if not (root / name).is_file():
        _die(f"pipeline file not found: {dvc_yaml}")
    if write:
        changed = write_code_deps(root, name)
        typer.echo(
            f"{name}: deps rewritten for {', '.join(changed)}" if changed else f"{name}: deps up to date"
        )
        return
    stale = stale_stages(root, name)
    for stage, (missing, extra) in stale.items():
        typer.echo(f"{stage}: missing {', '.join(missing) or 'none'}; extra {', '.join(extra) or 'none'}")
    if stale:
        _die(
            f"{len(stale)} stage(s) declare other code deps than they import: `video-r4 lineage deps --write`"
        )
    typer.echo(f"{name}: every stage's code deps are its import closure")


def _params_or_empty(path: Path) -> dict:
    return _params(path) if path.is_file() else {}


if __name__ == "__main__":
    app()
