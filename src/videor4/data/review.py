"""Human quality control: a reviewer's accept / reject decisions on synthesized trajectories.

The paper's data recipe ends with people looking at trajectories and dropping bad ones.
`video-r4 data review` shows them (frames, crops drawn on their frames, every step) and saves
the decisions to one JSON file kept in git; `build_data` declares that file as a dependency
and drops every rejected trajectory, so a decision is part of the data's lineage:

    {"version": 1,
     "decisions": {"drp-000012": {"decision": "reject", "note": "reads the wrong panel",
                                  "digest": "<sha256 of the trajectory's content>"}}}

A decision names a trajectory by id *and* content digest: ids are positions in one build, so
after the data changes (new params, new code) an old decision must not drop whatever now has
that id.  Decisions whose trajectory no longer exists unchanged are counted as stale and do
nothing.  The file's schema is checked by its Great Expectations suite (`expectations/review.json`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videor4.core.io import atomic_write_text, locked, project_root, read_json

DECISIONS_VERSION = 1
DECISIONS = ("accept", "reject")
REVIEWED_SETS = ("sft_drp", "sft_crp")


@dataclass(frozen=True)
class Decision:
    traj_id: str
    decision: str  # accept | reject
    digest: str  # trajectory_digest() of what the reviewer saw
    note: str = ""


def trajectory_digest(row: Mapping[str, Any]) -> str:
    """sha256 of what a reviewer judges: the question, every step (thought, call, observation
    pixels by their sha256) and the answer.  Image *paths* are left out: they name the build folder."""
    content = {
        "sample_id": row.get("sample_id"),
        "kind": row.get("kind"),
        "video": row.get("video"),
        "frame_indices": row.get("frame_indices"),
        "question": row.get("question"),
        "steps": [
            [
                s.get("thought"),
                s.get("tool_call"),
                s.get("observation_text"),
                s.get("image_sha256"),
                s.get("text"),
            ]
            for s in row.get("steps") or []
        ],
        "final_thought": row.get("final_thought"),
        "final_answer": row.get("final_answer"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def decision_rows(doc: Any) -> list[dict[str, Any]]:
    """The decisions file as flat rows (what its GX suite checks); a wrong top level raises ValueError."""
    if not isinstance(doc, dict) or set(doc) - {"version", "decisions"}:
        raise ValueError('expected {"version": 1, "decisions": {<trajectory id>: {...}}}')
    if doc.get("version") != DECISIONS_VERSION:
        raise ValueError(
            f"unsupported version {doc.get('version')!r} (this code reads version {DECISIONS_VERSION})"
        )
    decisions = doc.get("decisions")
    if not isinstance(decisions, dict):
        raise ValueError("'decisions' must be an object mapping trajectory ids to decisions")
    rows = []
    for traj_id, entry in decisions.items():
        row = dict(entry) if isinstance(entry, dict) else {"decision": entry}
        rows.append({"traj_id": traj_id, **row})
    return rows


class DecisionSchemaError(ValueError):
    """A decisions row breaks the GX suite `expectations/review.json` (GX's report is the message)."""


def decisions_from(doc: Any, validate: bool = True) -> dict[str, Decision]:
    """The decisions a parsed file, or a page's posted body, holds by trajectory id: the top level
    checked (ValueError), then every row against the GX suite (DecisionSchemaError)."""
    rows = decision_rows(doc)
    if validate:
        from videor4.data.validation import DataValidationError, require_valid

        try:
            # the project's suite, wherever the command was started
            require_valid(rows, "review", project_root() / "expectations", allow_empty=True)
        except DataValidationError as exc:
            raise DecisionSchemaError(str(exc)) from None
    return {
        r["traj_id"]: Decision(r["traj_id"], r["decision"], r.get("digest", ""), r.get("note") or "")
        for r in rows
    }


def load_decisions(path: str | os.PathLike, validate: bool = True) -> dict[str, Decision]:
    """The decisions in `path` by trajectory id.  A missing, malformed or schema-breaking file raises
    ValueError with one line naming the file (GX's report follows it when the schema is broken)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"review decisions file not found: {path}")
    try:
        return decisions_from(read_json(path), validate)
    except DecisionSchemaError as exc:
        raise ValueError(f"{path} breaks its schema (expectations/review.json): {exc}") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: {' '.join(str(exc).split())}") from None


def save_decisions(path: str | os.PathLike, decisions: Mapping[str, Decision]) -> Path:
    """Write the file atomically, sorted by id so a diff shows exactly what a reviewer changed."""
    doc = {
        "version": DECISIONS_VERSION,
        "decisions": {
            k: {f: v for f, v in asdict(d).items() if f != "traj_id"} for k, d in sorted(decisions.items())
        },
    }
    path = Path(path)
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path


def update_decisions(path: str | os.PathLike, incoming: Mapping[str, Decision]) -> Path:
    """Merge `incoming` into the file at `path` (created when missing).  Load, merge and save are
    one step under a lock across processes, so two savers at once each keep the other's decisions."""
    path = Path(path)
    with locked(path):
        merged = load_decisions(path) if path.is_file() else {}
        merged.update(incoming)
        return save_decisions(path, merged)


def apply_decisions(rows: dict[str, list[dict[str, Any]]], decisions: Mapping[str, Decision]) -> Counter:
    """Drop the rejected trajectories from the trajectory sets in `rows` (in place).

    Returns counts: `review_rejected` (dropped), `review_accepted` (kept, as reviewed) and
    `review_stale` (decisions whose trajectory is gone or has changed since it was reviewed).
    """
    counts: Counter = Counter()
    matched: set[str] = set()
    for name in REVIEWED_SETS:
        kept = []
        for row in rows.get(name, []):
            d = decisions.get(row.get("traj_id"))
            if d is not None and d.digest == trajectory_digest(row):
                matched.add(d.traj_id)
                counts[f"review_{d.decision}ed"] += 1
                if d.decision == "reject":
                    continue
            kept.append(row)
        rows[name] = kept
    counts["review_stale"] = len(set(decisions) - matched)
    return counts
