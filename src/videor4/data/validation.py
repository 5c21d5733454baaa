"""Data-quality gates for the JSONL datasets the pipeline writes (Great Expectations).

Every dataset has one suite file, ``expectations/<dataset>.json``.  GX checks flat
tables, not nested JSON or files on disk, so each dataset is flattened into a few
pandas tables with derived columns, and the file maps each table name to a plain GX
``ExpectationSuite`` JSON (``{"name", "expectations", "meta"}``)::

    {"<table>": {"name": "<dataset>.<table>", "expectations": [...]}, ...}

Datasets and their tables (``row`` = 1-based row number in the file, present in
every table so a person can find the line):

=================  =====================================================================
dataset            tables (one row per ...)
=================  =====================================================================
videos             videos (video), text_boxes (text box)
samples            samples (sample), evidence (evidence box)
sft_drp, sft_crp   trajectories (trajectory), frames (shown frame), steps (tool call),
                   clip_targets (clipping target), images (observation image)
rl_d, rl_c         samples (sample), evidence (evidence box), frames (shown frame)
review             decisions (a reviewer's decision on one trajectory)
splits             splits (a video and a split its samples are in: a video twice is a leak)
=================  =====================================================================

Derived columns carry what GX cannot compute itself, e.g. ``missing_video`` /
``missing_path`` (the path when the file does not exist, else null; for a video given
as a list of page images, the first missing page), ``n_answers``
(non-blank answer strings), ``bbox_error`` / ``args_error`` (why a box or tool call
is malformed, else null; by the protocol's own rules, ``is_box`` and ``check_arguments``),
``x1..y2`` (a box's corners), ``images_before`` (images the
model had seen before a step: the shown frames, then every earlier observation image),
``tools_used`` ("clipping", "cropping", "clipping+cropping" or "").  Non-numeric values
in top-level numeric fields become null, and ``numeric_errors`` keeps the originals.
Rows are flattened from the raw dicts, not through ``Trajectory.from_dict``: a malformed
row must still become table rows whose columns say what is wrong with it.  Evidence frames of
the ``samples`` dataset are checked against ``meta["num_frames"]`` only when a row has
it (samples do not record their frame count otherwise).

Relative paths inside rows are resolved against ``base_dir`` (default: the current
working directory, i.e. the repo root when stages run).

Empty datasets: zero rows fail with "dataset is empty" unless ``allow_empty=True``;
then the suites still run on empty tables with the expected columns, so a broken
suite file is caught, and the result is a pass.

All validations in a process share one ephemeral GX context (created on first use;
``import great_expectations`` alone takes seconds, so it is imported lazily).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from videor4.core.io import is_number, read_json, read_jsonl
from videor4.rumination.protocol import TOOL_NAMES, ToolCall, check_arguments, is_box

__all__ = [
    "DATASETS",
    "DataValidationError",
    "Failure",
    "ValidationReport",
    "build_tables",
    "require_valid",
    "validate_jsonl",
    "validate_rows",
]

DEFAULT_EXPECTATIONS_DIR = Path("expectations")
MAX_EXAMPLES = 3  # offending rows shown per failed expectation


class DataValidationError(Exception):
    """A dataset failed its expectations; ``str(exc)`` is the readable summary."""

    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class Failure:
    """One failed (or errored) expectation."""

    table: str
    expectation: str  # GX expectation type
    columns: list[str]
    description: str = ""
    unexpected_count: int | None = None  # rows that failed; None for table-level checks
    element_count: int | None = None
    examples: list[str] = field(default_factory=list)  # "row 3 traj_id='t3' step=1: tool_name='zoom'"
    detail: str = ""  # table-level result or the exception message when GX could not run it

    def describe(self) -> str:
        head = f"[{self.table}] {self.expectation}"
        if self.columns:
            head += f"({', '.join(self.columns)})"
        if self.description:
            head += f" — {self.description}"
        if self.unexpected_count is not None:
            head += f": {self.unexpected_count} of {self.element_count} rows failed"
        lines = [head]
        if self.detail:
            lines.append(f"      {self.detail}")
        lines += [f"      {ex}" for ex in self.examples]
        return "\n".join(lines)


@dataclass
class ValidationReport:
    dataset: str
    success: bool
    n_rows: int
    failures: list[Failure]
    n_expectations: int = 0

    def summary(self) -> str:
        if self.success:
            return f"{self.dataset}: OK ({self.n_rows} rows, {self.n_expectations} expectations)"
        lines = [
            f"{self.dataset}: FAILED ({self.n_rows} rows; "
            f"{len(self.failures)} of {self.n_expectations} expectations failed)"
        ]
        lines += ["  - " + f.describe() for f in self.failures]
        return "\n".join(lines)


# ------------------------------------------------------------------ value helpers
def _num(v: Any) -> float | None:
    return float(v) if is_number(v) else None


def _n_nonblank(values: Any) -> int:
    if not isinstance(values, list):
        return 0
    return sum(1 for v in values if isinstance(v, str) and v.strip())


def _nonblank_chars(v: Any) -> int | None:
    return len(v.strip()) if isinstance(v, str) else None


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _box(v: Any) -> tuple[dict[str, float | None], str | None]:
    """Corner columns and an error (None when ``v`` is a box: the protocol's `is_box`)."""
    if is_box(v):
        x1, y1, x2, y2 = (float(x) for x in v)
        return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, None
    return {"x1": None, "y1": None, "x2": None, "y2": None}, f"not [x1, y1, x2, y2] numbers: {_short(v)}"


def _options_error(problem_type: Any, options: Any) -> str | None:
    if problem_type == "multiple_choice":
        if isinstance(options, list) and len(options) >= 2 and all(isinstance(o, str) for o in options):
            return None
        return f"multiple_choice needs >= 2 option strings, got {_short(options)}"
    if options is None or isinstance(options, list):
        return None
    return f"options must be a list or null, got {_short(options)}"


class _Files:
    """Existence checks, memoized per validation (many rows share one video)."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self._seen: dict[str, bool] = {}

    def missing(self, path: Any) -> str | None:
        """``path`` if it names no existing file or folder, else None.

        A list (a video given as page images) yields its first missing entry; other
        non-strings yield None, as the not-null expectations report absent values.
        """
        if isinstance(path, list):
            if not path:
                return "(empty list)"
            return next((m for m in map(self.missing, path) if m is not None), None)
        if not isinstance(path, str) or not path:
            return None
        if path not in self._seen:
            p = Path(path)
            self._seen[path] = (p if p.is_absolute() else self.base_dir / p).exists()
        return None if self._seen[path] else path


# ------------------------------------------------------------------ table builders
# Each table lists its columns so that empty tables still have a schema; the raw
# top-level table (first of each dataset) also keeps whatever keys the rows have,
# so a missing required field shows up in the schema expectation.

VIDEO_NUMERIC = ["width", "height", "num_frames", "fps"]
VIDEO_FIELDS = ["video_id", "path", "width", "height", "num_frames", "fps", "split", "text_boxes"]
SAMPLE_FIELDS = [
    "sample_id",
    "video",
    "question",
    "answers",
    "problem_type",
    "options",
    "question_kind",
    "source",
    "split",
    "evidence",
    "meta",
]
TRAJ_FIELDS = [
    "traj_id",
    "sample_id",
    "kind",
    "video",
    "frame_indices",
    "num_source_frames",
    "question",
    "answers",
    "problem_type",
    "options",
    "vision",
    "steps",
    "final_thought",
    "final_answer",
]
RL_FIELDS = SAMPLE_FIELDS + ["tool_mode", "frame_indices", "num_source_frames"]

_RAW_FIELDS = set(VIDEO_FIELDS) | set(SAMPLE_FIELDS) | set(TRAJ_FIELDS) | set(RL_FIELDS)
BOX_COLS = ["x1", "y1", "x2", "y2", "bbox_error"]
TABLE_COLUMNS: dict[str, list[str]] = {
    "videos": ["row", *VIDEO_FIELDS, "missing_video", "n_text_boxes", "numeric_errors"],
    "text_boxes": ["row", "video_id", "box", "frame", "num_frames", "text", *BOX_COLS, "role", "score"],
    "samples": ["row", *SAMPLE_FIELDS, "missing_video", "n_answers", "options_error"],
    "rl_samples": [
        "row",
        *RL_FIELDS,
        "missing_video",
        "n_answers",
        "options_error",
        "n_frames_shown",
        "numeric_errors",
    ],
    "evidence": ["row", "sample_id", "evidence", "frame", "num_frames", "text", *BOX_COLS, "origin"],
    "trajectories": [
        "row",
        *TRAJ_FIELDS,
        "missing_video",
        "n_answers",
        "options_error",
        "final_answer_chars",
        "n_frames_shown",
        "n_steps",
        "tools_used",
        "kind_tools",
        "numeric_errors",
    ],
    "steps": [
        "row",
        "traj_id",
        "step",
        "tool_name",
        "args_error",
        "n_frames_shown",
        "images_before",
        "n_targets",
        "crop_target",
        *BOX_COLS[:4],
        "thought",
        "obs_text",
        "obs_n_images",
        "obs_n_sha256",
        "obs_error",
    ],
    "clip_targets": ["row", "traj_id", "step", "target", "n_frames_shown"],
    "images": ["row", "traj_id", "step", "image", "path", "missing_path", "sha256"],
    "decisions": ["row", "traj_id", "decision", "digest", "note", "unknown_keys"],
    "splits": ["row", "video", "split"],
}

# Columns that identify an offending row in the summary (besides the offending values).
INDEX_COLUMNS: dict[str, list[str]] = {
    "videos": ["row", "video_id"],
    "text_boxes": ["row", "video_id", "box"],
    "samples": ["row", "sample_id"],
    "rl_samples": ["row", "sample_id"],
    "evidence": ["row", "sample_id", "evidence"],
    "frames": ["row", "traj_id", "sample_id", "position"],  # whichever the table has
    "trajectories": ["row", "traj_id"],
    "steps": ["row", "traj_id", "step"],
    "clip_targets": ["row", "traj_id", "step"],
    "images": ["row", "traj_id", "step", "image"],
    "decisions": ["row", "traj_id"],
    "splits": ["row", "video"],
}


def _frame(records: list[dict[str, Any]], columns: list[str], keep_extra: bool = False) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (plus, for raw tables, any other keys seen)."""
    cols = list(columns)
    if keep_extra and records:
        seen = {k for r in records for k in r}
        cols += sorted(seen - set(cols))
        # A required field absent from every row must stay absent (the schema check reports it).
        cols = [c for c in cols if c in seen or c not in _RAW_FIELDS]
    df = pd.DataFrame.from_records(records, columns=cols) if records else pd.DataFrame(columns=cols)
    if df.empty:
        # Empty columns default to str in pandas 3; numeric expectations want numbers.
        df = df.astype(object)
    return df


def _raw(row: dict[str, Any], i: int) -> dict[str, Any]:
    """Top-level fields as-is plus the row number; numbers are coerced later."""
    return {**row, "row": i + 1}


def _numeric_errors(row: dict[str, Any], fields: Sequence[str]) -> str | None:
    """Fields present but not numbers, with their values (coercion below turns them into null)."""
    bad = [f"{f}={_short(row[f], 40)}" for f in fields if row.get(f) is not None and not is_number(row[f])]
    return "; ".join(bad) or None


def _coerce_numeric(df: pd.DataFrame, columns: Sequence[str]) -> None:
    # Non-numbers become null, so they fail not-null instead of crashing a comparison;
    # `numeric_errors` keeps the original values for the report.
    for col in columns:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col].map(_num), errors="coerce").astype("float64")


def _evidence_rows(i: int, sid: Any, evidence: Any, num_frames: Any) -> list[dict[str, Any]]:
    out = []
    for j, ev in enumerate(evidence if isinstance(evidence, list) else []):
        ev = ev if isinstance(ev, dict) else {}
        corners, err = _box(ev.get("bbox"))
        out.append(
            {
                "row": i + 1,
                "sample_id": sid,
                "evidence": j,
                "frame": _num(ev.get("frame")),
                "num_frames": _num(num_frames),
                "text": ev.get("text"),
                **corners,
                "bbox_error": err,
                "origin": ev.get("origin"),
            }
        )
    return out


FRAME_COLS = ["position", "frame_index", "num_source_frames"]


def _frame_rows(i: int, id_col: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shown frame; ``position`` is the 1-based index the model uses."""
    fi = row.get("frame_indices")
    return [
        {
            "row": i + 1,
            id_col: row.get(id_col),
            "position": k + 1,
            "frame_index": _num(f),
            "num_source_frames": _num(row.get("num_source_frames")),
        }
        for k, f in enumerate(fi if isinstance(fi, list) else [])
    ]


def _video_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    videos, boxes = [], []
    for i, r in enumerate(rows):
        tbs = r.get("text_boxes")
        videos.append(
            {
                **_raw(r, i),
                "missing_video": files.missing(r.get("path")),
                "n_text_boxes": len(tbs) if isinstance(tbs, list) else None,
                "numeric_errors": _numeric_errors(r, VIDEO_NUMERIC),
            }
        )
        for j, tb in enumerate(tbs if isinstance(tbs, list) else []):
            tb = tb if isinstance(tb, dict) else {}
            corners, err = _box(tb.get("bbox"))
            boxes.append(
                {
                    "row": i + 1,
                    "video_id": r.get("video_id"),
                    "box": j,
                    "frame": _num(tb.get("frame")),
                    "num_frames": _num(r.get("num_frames")),
                    "text": tb.get("text"),
                    **corners,
                    "bbox_error": err,
                    "role": tb.get("role"),
                    "score": _num(tb.get("score")),
                }
            )
    vdf = _frame(videos, TABLE_COLUMNS["videos"], keep_extra=True)
    _coerce_numeric(vdf, VIDEO_NUMERIC)
    return {"videos": vdf, "text_boxes": _frame(boxes, TABLE_COLUMNS["text_boxes"])}


def _sample_common(r: dict[str, Any], i: int, files: _Files) -> dict[str, Any]:
    return {
        **_raw(r, i),
        "missing_video": files.missing(r.get("video")),
        "n_answers": _n_nonblank(r.get("answers")),
        "options_error": _options_error(r.get("problem_type"), r.get("options")),
    }


def _sample_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    samples, evidence = [], []
    for i, r in enumerate(rows):
        samples.append(_sample_common(r, i, files))
        meta = r.get("meta") if isinstance(r.get("meta"), dict) else {}
        evidence += _evidence_rows(i, r.get("sample_id"), r.get("evidence"), meta.get("num_frames"))
    return {
        "samples": _frame(samples, TABLE_COLUMNS["samples"], keep_extra=True),
        "evidence": _frame(evidence, TABLE_COLUMNS["evidence"]),
    }


def _rl_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    samples, evidence, frames = [], [], []
    for i, r in enumerate(rows):
        fi = r.get("frame_indices")
        samples.append(
            {
                **_sample_common(r, i, files),
                "n_frames_shown": len(fi) if isinstance(fi, list) else None,
                "numeric_errors": _numeric_errors(r, ["num_source_frames"]),
            }
        )
        evidence += _evidence_rows(i, r.get("sample_id"), r.get("evidence"), r.get("num_source_frames"))
        frames += _frame_rows(i, "sample_id", r)
    sdf = _frame(samples, TABLE_COLUMNS["rl_samples"], keep_extra=True)
    _coerce_numeric(sdf, ["num_source_frames"])
    return {
        "samples": sdf,
        "evidence": _frame(evidence, TABLE_COLUMNS["evidence"]),
        "frames": _frame(frames, ["row", "sample_id", *FRAME_COLS]),
    }


def _checked_arguments(name: Any, args: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(the arguments as the tools read them, None) or (None, why they are malformed), by the
    protocol's own check, so a stored call passes exactly when the tools would accept it.
    Unknown tools are reported once, by name (the tool_name check)."""
    if name not in TOOL_NAMES:
        return None, None
    if not isinstance(args, dict):
        return None, f"tool call 'arguments' must be a JSON object, got {_short(args)}"
    call = ToolCall(name, dict(args))  # a copy: the check turns a bare frame number into a list
    err = check_arguments(call)
    return (None, err) if err else (call.arguments, None)


def _trajectory_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    trajs, frames, steps, targets, images = [], [], [], [], []
    for i, r in enumerate(rows):
        fi = r.get("frame_indices")
        n_shown = len(fi) if isinstance(fi, list) else 0
        frames += _frame_rows(i, "traj_id", r)
        raw_steps = r.get("steps") if isinstance(r.get("steps"), list) else []
        tools = _step_rows(i, r.get("traj_id"), raw_steps, n_shown, files, steps, targets, images)
        tools_used = "+".join(sorted(tools))
        trajs.append(
            {
                **_sample_common(r, i, files),
                "final_answer_chars": _nonblank_chars(r.get("final_answer")),
                "n_frames_shown": float(n_shown),
                "n_steps": float(len(raw_steps)),
                "tools_used": tools_used,
                "kind_tools": f"{r.get('kind')}:{tools_used}",
                "numeric_errors": _numeric_errors(r, ["num_source_frames"]),
            }
        )
    tdf = _frame(trajs, TABLE_COLUMNS["trajectories"], keep_extra=True)
    _coerce_numeric(tdf, ["num_source_frames"])
    return {
        "trajectories": tdf,
        "frames": _frame(frames, ["row", "traj_id", *FRAME_COLS]),
        "steps": _frame(steps, TABLE_COLUMNS["steps"]),
        "clip_targets": _frame(targets, TABLE_COLUMNS["clip_targets"]),
        "images": _frame(images, TABLE_COLUMNS["images"]),
    }


def _step_rows(
    i: int,
    tid: Any,
    raw_steps: list[Any],
    n_shown: int,
    files: _Files,
    steps: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    images: list[dict[str, Any]],
) -> set[str]:
    """Append trajectory row `i`'s steps, clip targets and observation images to their tables;
    returns the known tools it calls."""
    seen = n_shown  # images the model has seen so far (frames, then observation images)
    tools: set[str] = set()
    for s, step in enumerate(raw_steps):
        step = step if isinstance(step, dict) else {}
        call = step.get("tool_call") if isinstance(step.get("tool_call"), dict) else {}
        obs = step.get("observation") if isinstance(step.get("observation"), dict) else {}
        name, args = call.get("name"), call.get("arguments")
        args, err = _checked_arguments(name, args)
        if name in TOOL_NAMES:  # unknown names are reported once, by the tool_name check
            tools.add(name)
        rec = _step_record(i, tid, s, name, err, n_shown, seen, step, obs)
        if err is None and name == "clipping":
            tf = args["target_frames"]
            rec["n_targets"] = float(len(tf))
            targets += [
                {
                    "row": i + 1,
                    "traj_id": tid,
                    "step": s,
                    "target": float(t),
                    "n_frames_shown": float(n_shown),
                }
                for t in tf
            ]
        elif err is None and name == "cropping":
            rec["crop_target"] = float(args["target_image"])
            rec.update(_box(args["bbox_2d"])[0])
        obs_imgs = _observation_images(i, tid, s, obs, files, rec, images)
        steps.append(rec)
        seen += len(obs_imgs or [])
    return tools


def _step_record(
    i: int, tid: Any, s: int, name: Any, err: str | None, n_shown: int, seen: int, step: dict, obs: dict
) -> dict[str, Any]:
    """Step `s`'s row of the steps table; the call's details and the observation's counts are filled
    in later."""
    return {
        "row": i + 1,
        "traj_id": tid,
        "step": s,
        "tool_name": name,
        "args_error": err,
        "n_frames_shown": float(n_shown),
        "images_before": float(seen),
        "n_targets": None,
        "crop_target": None,
        "x1": None,
        "y1": None,
        "x2": None,
        "y2": None,
        "thought": step.get("thought"),
        "obs_text": obs.get("text"),
        "obs_n_images": None,
        "obs_n_sha256": None,
        "obs_error": obs.get("error"),
    }


def _observation_images(
    i: int,
    tid: Any,
    s: int,
    obs: dict[str, Any],
    files: _Files,
    rec: dict[str, Any],
    images: list[dict[str, Any]],
) -> list[Any] | None:
    """Count step `s`'s observation images and hashes into its record `rec`, append one row per image
    to `images`; returns the image list (None when it is not a list)."""
    obs_imgs = obs.get("images") if isinstance(obs.get("images"), list) else None
    shas = obs.get("image_sha256") if isinstance(obs.get("image_sha256"), list) else None
    rec["obs_n_images"] = None if obs_imgs is None else float(len(obs_imgs))
    rec["obs_n_sha256"] = None if shas is None else float(len(shas))
    for k, path in enumerate(obs_imgs or []):
        sha = shas[k] if shas is not None and k < len(shas) else None
        images.append(
            {
                "row": i + 1,
                "traj_id": tid,
                "step": s,
                "image": k,
                "path": path,
                "missing_path": files.missing(path),
                "sha256": None if sha is None else str(sha),
            }
        )
    return obs_imgs


def _review_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    known = {"traj_id", "decision", "digest", "note"}
    decisions = [
        {
            "row": i + 1,
            **{k: r.get(k) for k in known},
            "unknown_keys": ", ".join(sorted(set(r) - known)) or None,
        }
        for i, r in enumerate(rows)
    ]
    return {"decisions": _frame(decisions, TABLE_COLUMNS["decisions"])}


def _split_tables(rows: list[dict[str, Any]], files: _Files) -> dict[str, pd.DataFrame]:
    """One row per (video, split) that the rows' samples use: a video in two splits appears twice."""
    pairs = sorted({(str(r.get("video")), str(r.get("split"))) for r in rows})
    videos = [{"row": i + 1, "video": video, "split": split} for i, (video, split) in enumerate(pairs)]
    return {"splits": _frame(videos, TABLE_COLUMNS["splits"])}


_Builder = Callable[[list[dict[str, Any]], _Files], dict[str, pd.DataFrame]]
DATASETS: dict[str, _Builder] = {
    "videos": _video_tables,
    "samples": _sample_tables,
    "sft_drp": _trajectory_tables,
    "sft_crp": _trajectory_tables,
    "rl_d": _rl_tables,
    "rl_c": _rl_tables,
    "review": _review_tables,
    "splits": _split_tables,
}


def _index_columns(dataset: str, table: str) -> list[str]:
    key = "rl_samples" if dataset in ("rl_d", "rl_c") and table == "samples" else table
    return INDEX_COLUMNS[key]


def build_tables(
    rows: list[dict[str, Any]], dataset: str, base_dir: Path | None = None
) -> dict[str, pd.DataFrame]:
    """The flat tables a dataset is validated as (useful for debugging a suite)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    rows = [r if isinstance(r, dict) else {} for r in rows]
    return DATASETS[dataset](rows, _Files(Path.cwd() if base_dir is None else Path(base_dir)))


# ------------------------------------------------------------------ GX plumbing
_LOCK = threading.Lock()
_CONTEXT: Any = None
_BATCH_DEFS: dict[str, Any] = {}
_SUITES: dict[tuple[str, int], dict[str, Any]] = {}


def _context() -> Any:
    """The process-wide ephemeral GX context (created once; importing GX is slow)."""
    global _CONTEXT
    if _CONTEXT is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in logs
        ctx.data_sources.add_pandas("videor4")
        _CONTEXT = ctx
    return _CONTEXT


def _batch_definition(name: str) -> Any:
    if name not in _BATCH_DEFS:
        source = _context().data_sources.get("videor4")
        asset = source.add_dataframe_asset(name)
        _BATCH_DEFS[name] = asset.add_batch_definition_whole_dataframe("all")
    return _BATCH_DEFS[name]


def _load_suites(path: Path) -> dict[str, Any]:
    """``{table: ExpectationSuite}`` from a suite file (cached by modification time)."""
    import great_expectations as gx

    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite file {path}")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _SUITES:
        spec = read_json(path)
        if not isinstance(spec, dict) or not spec:
            raise ValueError(f"{path}: expected an object mapping table names to GX suites")
        _SUITES[key] = {table: gx.ExpectationSuite(**suite) for table, suite in spec.items()}
    return _SUITES[key]


def _columns_of(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    if "column_list" in kwargs:
        return list(kwargs["column_list"])
    return []  # table-level (e.g. the schema check)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item"):  # numpy scalar
        return _fmt(v.item())
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "None"
    return _short(v)


def _example(entry: dict[str, Any], index_cols: list[str], value_cols: list[str]) -> str:
    """``row 3 traj_id='t3' step=1: tool_name='zoom'`` from one unexpected_index_list entry."""
    ids = [
        f"row {_fmt(entry[c])}" if c == "row" else f"{c}={_fmt(entry[c])}"
        for c in index_cols
        if c in entry and c not in value_cols
    ]
    vals = ", ".join(f"{c}={_fmt(entry[c])}" for c in value_cols if c in entry)
    return f"{' '.join(ids)}: {vals}" if vals else " ".join(ids)


def _failure(table: str, res: Any, index_cols: list[str]) -> Failure:
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    cols = _columns_of(kwargs)
    result = res.result or {}
    fail = Failure(table=table, expectation=cfg.type, columns=cols, description=cfg.description or "")
    exc = res.exception_info or {}
    # exception_info is either flat or keyed by metric id, depending on where GX failed.
    infos = [exc] if "exception_message" in exc else [v for v in exc.values() if isinstance(v, dict)]
    messages = [i.get("exception_message") for i in infos if i.get("raised_exception")]
    if messages:
        fail.detail = f"could not run: {messages[0]}"
        return fail
    if "unexpected_count" in result:
        fail.unexpected_count = int(result["unexpected_count"])
        fail.element_count = int(result.get("element_count", 0))
        entries = result.get("partial_unexpected_index_list") or []
        fail.examples = [_example(e, index_cols, cols) for e in entries[:MAX_EXAMPLES]]
        if not fail.examples:
            fail.examples = [_fmt(v) for v in (result.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]
    else:
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        if mismatched.get("missing"):
            fail.columns = [str(c) for c in mismatched["missing"]]
            fail.detail = "these fields are missing from every row"
        else:
            fail.detail = f"observed: {_short(result.get('observed_value'), 200)}"
    return fail


def _fold_missing_columns(failures: list[Failure]) -> list[Failure]:
    """Fold expectations that could not run on a missing column into the schema failure.

    Otherwise one absent field yields a screenful of identical "column does not exist" errors.
    """
    schema = next((f for f in failures if f.expectation == "expect_table_columns_to_match_set"), None)
    if schema is None:
        return failures
    missing = set(schema.columns)
    folded = [
        f
        for f in failures
        if f.detail.startswith("could not run") and f.columns and set(f.columns) <= missing
    ]
    if folded:
        schema.detail += f" ({len(folded)} expectation(s) on them could not run)"
    # The schema failure goes first: it explains the rest.
    return [schema] + [f for f in failures if f is not schema and f not in folded]


# ------------------------------------------------------------------ public API
def validate_rows(
    rows: list[dict[str, Any]],
    dataset: str,
    expectations_dir: Path = DEFAULT_EXPECTATIONS_DIR,
    allow_empty: bool = False,
    base_dir: Path | None = None,
) -> ValidationReport:
    """Validate in-memory rows of ``dataset`` against ``expectations_dir/<dataset>.json``."""
    tables = build_tables(rows, dataset, base_dir)  # non-object rows become {} there
    suites = _load_suites(Path(expectations_dir) / f"{dataset}.json")
    unknown = sorted(set(suites) - set(tables))
    if unknown:
        raise ValueError(f"{dataset}.json has suites for unknown tables {unknown}; tables: {sorted(tables)}")

    failures: list[Failure] = []
    n_expectations = 2  # the two checks below
    if not rows and not allow_empty:
        failures.append(
            Failure(
                table=dataset,
                expectation="dataset_not_empty",
                columns=[],
                detail="dataset is empty (0 rows); pass allow_empty=True if that is expected",
            )
        )
    not_objects = [(i + 1, r) for i, r in enumerate(rows) if not isinstance(r, dict)]
    if not_objects:
        failures.append(
            Failure(
                table=dataset,
                expectation="rows_are_objects",
                columns=[],
                unexpected_count=len(not_objects),
                element_count=len(rows),
                examples=[f"row {i}: {_short(r)}" for i, r in not_objects[:MAX_EXAMPLES]],
            )
        )
    with _LOCK:  # GX's shared execution engine keeps per-batch state
        for table, suite in suites.items():
            df = tables[table]
            index_cols = [c for c in _index_columns(dataset, table) if c in df.columns]
            batch = _batch_definition(f"{dataset}.{table}").get_batch(batch_parameters={"dataframe": df})
            result = batch.validate(
                suite,
                result_format={"result_format": "SUMMARY", "unexpected_index_column_names": index_cols},
            )
            n_expectations += len(result.results)
            failures += _fold_missing_columns(
                [_failure(table, r, index_cols) for r in result.results if not r.success]
            )
    return ValidationReport(
        dataset=dataset,
        success=not failures,
        n_rows=len(rows),
        failures=failures,
        n_expectations=n_expectations,
    )


def validate_jsonl(
    path: str | os.PathLike,
    dataset: str,
    expectations_dir: Path = DEFAULT_EXPECTATIONS_DIR,
    allow_empty: bool = False,
    base_dir: Path | None = None,
) -> ValidationReport:
    """Validate a JSON-lines file (a malformed line raises ValueError naming file and line)."""
    report = validate_rows(read_jsonl(path), dataset, expectations_dir, allow_empty, base_dir)
    report.dataset = f"{dataset} ({path})"
    return report


def require_valid(
    path_or_rows: str | os.PathLike | list[dict[str, Any]],
    dataset: str,
    expectations_dir: Path = DEFAULT_EXPECTATIONS_DIR,
    allow_empty: bool = False,
    base_dir: Path | None = None,
) -> ValidationReport:
    """Validate and raise :class:`DataValidationError` (message = summary) on failure."""
    if isinstance(path_or_rows, list):
        report = validate_rows(path_or_rows, dataset, expectations_dir, allow_empty, base_dir)
    else:
        report = validate_jsonl(path_or_rows, dataset, expectations_dir, allow_empty, base_dir)
    if not report.success:
        raise DataValidationError(report.summary(), report)
    return report
