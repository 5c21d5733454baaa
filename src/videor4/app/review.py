"""`video-r4 data review`: one self-contained HTML page for human quality control.

Each trajectory is shown as `render.trajectory_image` draws it (the frames with every crop
outlined on the frame it came from, each step's thought, call and returned images, the answer),
with accept / reject buttons and a note.  The page needs nothing from the network: pictures are
inlined as data URIs, the script is inline.

Saving: served by `--serve` (a small local HTTP server), "Save" posts the decisions and the
server merges them into the decisions file in the repository (atomically, schema-checked);
opened as a plain file, "Save" downloads decisions.json for you to put there.  `build_data`
declares that file and drops what was rejected (`videor4.data.review`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from videor4.data.review import DECISIONS, Decision, DecisionSchemaError, decisions_from, load_decisions, save_decisions, trajectory_digest

MAX_POST_BYTES = 8 << 20

_SCRIPT = """
function decisions() {
  const out = {};
  for (const sec of document.querySelectorAll('section.traj')) {
    const picked = sec.querySelector('input[type=radio]:checked');
    if (!picked) continue;
    out[sec.dataset.trajId] = {decision: picked.value, digest: sec.dataset.digest,
                               note: sec.querySelector('textarea').value};
  }
  return {version: 1, decisions: out};
}
async function save() {
  const body = JSON.stringify(decisions(), null, 2);
  const status = document.getElementById('status');
  if (location.protocol.startsWith('http')) {
    const resp = await fetch('decisions', {method: 'POST', headers: {'Content-Type': 'application/json'}, body});
    const answer = await resp.json();
    status.textContent = resp.ok ? `saved ${answer.saved} decisions to ${answer.path}` : `not saved: ${answer.error}`;
  } else {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([body], {type: 'application/json'}));
    a.download = 'decisions.json';
    a.click();
    status.textContent = 'downloaded decisions.json: put it where data.review.decisions points';
  }
}
document.getElementById('save').addEventListener('click', save);
"""

_STYLE = """
body { font-family: sans-serif; margin: 1em 2em; }
section.traj { border: 1px solid #ccc; border-radius: 6px; padding: .6em 1em; margin: 1em 0; }
section.traj img { max-width: 100%; }
.verdict label { margin-right: 1.5em; }
textarea { width: 60%; height: 2.5em; vertical-align: top; }
#bar { position: sticky; top: 0; background: white; padding: .4em 0; border-bottom: 1px solid #ccc; }
"""


def _png_data_uri(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pick_rows(rows: Sequence[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded random sample of `limit` rows (all when None), kept in file order."""
    if limit is None or limit >= len(rows):
        return list(rows)
    chosen = set(random.Random(seed).sample(range(len(rows)), limit))
    return [r for i, r in enumerate(rows) if i in chosen]


def review_page(rows: Sequence[dict[str, Any]], decisions: Mapping[str, Decision], title: str) -> str:
    """The page for these trajectory rows; earlier decisions on unchanged trajectories are pre-set."""
    from videor4.app.render import trajectory_image
    from videor4.rumination.trajectory import Trajectory

    sections = []
    for row in rows:
        traj = Trajectory.from_dict(row)
        digest = trajectory_digest(row)
        earlier = decisions.get(traj.traj_id)
        current = earlier if earlier is not None and earlier.digest == digest else None
        radios = "".join(
            f'<label><input type="radio" name="{html.escape(traj.traj_id)}" value="{v}"'
            f'{" checked" if current and current.decision == v else ""}> {v}</label>'
            for v in DECISIONS
        )
        note = html.escape(current.note) if current else ""
        steps = "".join(f"<li>{html.escape(s.turn_text)}</li>" for s in traj.steps)
        sections.append(
            f'<section class="traj" id="{html.escape(traj.traj_id)}" data-traj-id="{html.escape(traj.traj_id)}" '
            f'data-digest="{digest}">\n<h2>{html.escape(traj.traj_id)} · {html.escape(traj.kind)} · '
            f'{html.escape(traj.sample_id)}</h2>\n<p>{html.escape(traj.question)}</p>\n'
            f'<img alt="{html.escape(traj.traj_id)}" src="{_png_data_uri(trajectory_image(traj))}">\n'
            f'<details><summary>turns as the model is trained on them</summary><ol>{steps}</ol>'
            f"<p>{html.escape(traj.final_thought)} → {html.escape(str(traj.final_answer))}</p></details>\n"
            f'<div class="verdict">{radios}<textarea placeholder="note">{note}</textarea></div>\n</section>'
        )
    return (
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        f'<div id="bar"><b>{html.escape(title)}</b> — {len(rows)} trajectories. '
        f'<button id="save">Save</button> <span id="status"></span></div>\n'
        + "\n".join(sections)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def merge_decisions(path: Path, posted: Any) -> int:
    """Merge posted decisions into the file at `path` (created when missing); returns how many were posted.
    A malformed post raises ValueError and leaves the file as it was."""
    try:
        incoming = decisions_from(posted)
    except DecisionSchemaError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    merged = load_decisions(path) if path.is_file() else {}
    merged.update(incoming)
    save_decisions(path, merged)
    return len(incoming)


def make_server(page: str, decisions_path: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server: GET / is the page, POST /decisions saves.  One lock serialises saves."""
    body = page.encode()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path in ("/", "/index.html"):
                self._send(200, body, "text/html; charset=utf-8")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/decisions":
                self._send(404, b"not found", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length > MAX_POST_BYTES:
                    raise ValueError(f"request too large ({length} bytes)")
                with lock:
                    saved = merge_decisions(decisions_path, json.loads(self.rfile.read(length)))
                answer, status = {"saved": saved, "path": str(decisions_path)}, 200
            except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
                answer, status = {"error": " ".join(str(exc).split())}, 400
            self._send(status, json.dumps(answer).encode(), "application/json")

        def log_message(self, format: str, *args: Any) -> None:  # one line per request, on stderr
            super().log_message(format, *args)

    return ThreadingHTTPServer((host, port), Handler)
