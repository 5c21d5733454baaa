"""`video-r4 data review`: one self-contained HTML page for human quality control.

Each trajectory is shown as `render.trajectory_image` draws it (the frames with every crop
outlined on the frame it came from, each step's thought, call and returned images, the answer),
with accept / reject buttons and a note.  The page needs nothing from the network: pictures are
inlined as data URIs, the script is inline.

Saving: served by `--serve` (a small local HTTP server), "Save" posts the decisions and the
server merges them into the decisions file in the repository (atomically, schema-checked, under
a lock that other servers on the same file respect); opened as a plain file, "Save" downloads
decisions.json for you to put there.  `build_data` declares that file and drops what was
rejected (`videor4.data.review`).

The server answers only requests that name it in `Host` (a DNS-rebinding page names its own
host), and saves only JSON posts carrying the page's per-run token in a custom header: no other
site's page can send either without a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import base64
import hmac
import html
import io
import ipaddress
import json
import random
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from videor4.core.io import project_root
from videor4.data.review import (
    DECISIONS,
    Decision,
    DecisionSchemaError,
    decisions_from,
    trajectory_digest,
    update_decisions,
)

MAX_POST_BYTES = 8 << 20
MAX_JSON_DEPTH = 8  # a decisions file nests three deep
TOKEN_HEADER = "X-Review-Token"
TOKEN_META = '<meta name="review-token" content="">'  # make_server fills in the run's token
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request before the connection is dropped

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
    const token = document.querySelector('meta[name=review-token]').content;
    const headers = {'Content-Type': 'application/json', 'X-Review-Token': token};
    const resp = await fetch('decisions', {method: 'POST', headers, body});
    const answer = await resp.json();
    status.textContent = resp.ok ? `saved ${answer.saved} decisions to ${answer.path}`
                                 : `not saved: ${answer.error}`;
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
            f"{' checked' if current and current.decision == v else ''}> {v}</label>"
            for v in DECISIONS
        )
        note = html.escape(current.note) if current else ""
        steps = "".join(f"<li>{html.escape(s.turn_text)}</li>" for s in traj.steps)
        sections.append(
            f'<section class="traj" id="{html.escape(traj.traj_id)}" '
            f'data-traj-id="{html.escape(traj.traj_id)}" '
            f'data-digest="{digest}">\n<h2>{html.escape(traj.traj_id)} · {html.escape(traj.kind)} · '
            f"{html.escape(traj.sample_id)}</h2>\n<p>{html.escape(traj.question)}</p>\n"
            f'<img alt="{html.escape(traj.traj_id)}" src="{_png_data_uri(trajectory_image(traj))}">\n'
            f"<details><summary>turns as the model is trained on them</summary><ol>{steps}</ol>"
            f"<p>{html.escape(traj.final_thought)} → {html.escape(str(traj.final_answer))}</p></details>\n"
            f'<div class="verdict">{radios}<textarea placeholder="note">{note}</textarea></div>\n</section>'
        )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8">{TOKEN_META}'
        f"<title>{html.escape(title)}</title>"
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
    update_decisions(path, incoming)
    return len(incoming)


def decisions_file(path: str | Path) -> Path:
    """The decisions file a (relative) path names: from the project root, like params.yaml names it."""
    return project_root() / path


def exposure_warning(host: str) -> str | None:
    """What to tell someone who serves the page beyond this machine (None on a loopback address)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = host.lower() == "localhost"
    if loopback:
        return None
    return (
        f"warning: serving on {host} lets other machines reach the review page; it answers only "
        "requests addressed to localhost or that address, with the page's token"
    )


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays / objects deeper than `limit` (strings skipped), checked
    before parsing: a deep enough body makes the parser raise RecursionError."""
    depth = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > limit:
                return True
        elif mark in "]}":
            depth -= 1
    return False


class Refused(Exception):
    """A request the server answers with `status` and this one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _allowed_hosts(host: str, port: int) -> set[str]:
    """The Host header values that name this server: localhost or the bound address, with the port."""
    names = {"localhost", "127.0.0.1"}
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified:  # 0.0.0.0 names no host
            names.add(f"[{host}]" if address.version == 6 else host)
    except ValueError:
        names.add(host.lower())
    return {f"{name}:{port}" for name in names}


def _read_decisions(handler: BaseHTTPRequestHandler, token: str) -> dict[str, Decision]:
    """The posted decisions, every check done and the body read before any lock is taken."""
    kind = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused(415, "Content-Type must be application/json")
    if not hmac.compare_digest((handler.headers.get(TOKEN_HEADER) or "").encode(), token.encode()):
        raise Refused(403, f"missing or wrong {TOKEN_HEADER}: reload the page this server serves")
    length = handler.headers.get("Content-Length")
    if length is None:
        raise Refused(411, "Content-Length is required")
    if not re.fullmatch(r"[0-9]+", length.strip()):
        raise Refused(400, f"Content-Length must be an integer >= 0, got {length[:40]!r}")
    if int(length) > MAX_POST_BYTES:
        raise Refused(413, f"request too large ({int(length)} bytes; at most {MAX_POST_BYTES})")
    try:
        raw = handler.rfile.read(int(length))
    except TimeoutError:
        raise Refused(408, f"request body not received within {handler.timeout} s") from None
    if len(raw) < int(length):
        raise Refused(400, "request body shorter than its Content-Length")
    try:
        text = raw.decode("utf-8")
        if json_too_deep(text):
            raise Refused(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return decisions_from(json.loads(text))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, a schema break
        raise Refused(400, (str(exc).strip().splitlines() or [type(exc).__name__])[0]) from None


def make_server(
    page: str, decisions_path: Path, host: str = "127.0.0.1", port: int = 0, timeout: float = REQUEST_TIMEOUT
) -> ThreadingHTTPServer:
    """An HTTP server: GET / is the page (with this run's token), POST /decisions saves.  A relative
    decisions path is taken from the project root; a refused request gets a 4xx and one line."""
    decisions_path = decisions_file(decisions_path)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    token = secrets.token_urlsafe(32)
    filled = page.replace(TOKEN_META, TOKEN_META.replace('content=""', f'content="{token}"'), 1)
    body = (filled if filled != page else TOKEN_META.replace('""', f'"{token}"') + page).encode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _refuse(self, exc: Refused) -> None:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._send(exc.status, json.dumps({"error": str(exc)}).encode(), "application/json")

        def _check_addressed(self) -> None:
            allowed = _allowed_hosts(host, self.server.server_address[1])
            if (self.headers.get("Host") or "").lower() not in allowed:
                raise Refused(403, f"Host must be one of {', '.join(sorted(allowed))}")
            origin = self.headers.get("Origin")
            if origin is not None and origin.lower() not in {f"http://{a}" for a in allowed}:
                raise Refused(403, "requests from other sites' pages are refused")

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                self._check_addressed()
                if self.path not in ("/", "/index.html"):
                    raise Refused(404, "not found")
            except Refused as exc:
                return self._refuse(exc)
            self._send(200, body, "text/html; charset=utf-8")

        def do_POST(self) -> None:  # noqa: N802
            try:
                self._check_addressed()
                if self.path != "/decisions":
                    raise Refused(404, "not found")
                incoming = _read_decisions(self, token)
            except Refused as exc:
                return self._refuse(exc)
            try:
                update_decisions(decisions_path, incoming)
            except (ValueError, OSError) as exc:  # the file on disk is broken or cannot be written
                return self._refuse(Refused(500, " ".join(str(exc).split())))
            answer = {"saved": len(incoming), "path": str(decisions_path)}
            self._send(200, json.dumps(answer).encode(), "application/json")

    Handler.timeout = timeout  # a socket timeout: a client that stops sending holds nothing for long
    return ThreadingHTTPServer((host, port), Handler)
