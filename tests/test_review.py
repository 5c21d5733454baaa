"""Human QC round trip: `video-r4 data review --serve` in real headless Chromium, driven over the
DevTools protocol (mouse clicks and typed text, as a person would), then a rebuild that drops
exactly the rejected trajectory.  Then the server against what a person did not send: other
sites' pages, DNS rebinding, malformed and stalled requests, and a second server on the same file,
all as real HTTP requests to real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import SMALL_PARAMS, Server, free_port
from videor4.core.io import read_jsonl
from videor4.data.review import apply_decisions, load_decisions, save_decisions, trajectory_digest


class DevTools:
    """The smallest DevTools-protocol client: one page, commands answered in order."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    async def send(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:  # events arrive in between; skip them
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    async def value(self, expression: str):
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0):
        for _ in range(int(timeout / 0.2)):
            value = await self.value(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    async def click(self, selector: str) -> None:
        """Scroll the element into view and click its centre with the mouse."""
        box = await self.value(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


async def _reject_in_browser(devtools_url: str, page_url: str, traj_id: str, note: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{devtools_url}/json/list") as resp:
            target = next(t for t in await resp.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = DevTools(ws)
            await page.send("Page.navigate", url=page_url)
            await page.wait_for("document.readyState === 'complete' && !!document.getElementById('save')")
            section = f'section[data-traj-id="{traj_id}"]'
            await page.click(f"{section} input[value=reject]")
            await page.click(f"{section} textarea")
            await page.send("Input.insertText", text=note)
            await page.click("#save")
            return await page.wait_for("document.getElementById('status').textContent")


def test_a_trajectory_rejected_in_the_browser_is_dropped_by_the_rebuild(small_built, tmp_path) -> None:
    from videor4.data.build import build_config, build_datasets, load_synthetic_source, validate_dataset

    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed: `make browser` installs Debian's chromium package"
    before = {name: read_jsonl(small_built / f"{name}.jsonl") for name in ("sft_drp", "sft_crp")}
    victim = before["sft_crp"][1]["traj_id"]
    decisions = tmp_path / "review" / "decisions.json"

    cli = str(Path(sys.executable).parent / "video-r4")
    port, devtools_port = free_port(), free_port()
    reviewer = Server(
        [
            cli,
            "data",
            "review",
            "--data-dir",
            str(small_built),
            "--limit",
            "0",
            "--decisions",
            str(decisions),
            "--out",
            str(tmp_path / "page.html"),
            "--serve",
            "--port",
            str(port),
        ],
        port,
        {**__import__("os").environ},
        tmp_path / "review.log",
        ready_timeout=180,
    )
    browser = Server(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-allow-origins=*",
            f"--remote-debugging-port={devtools_port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        devtools_port,
        {**__import__("os").environ},
        tmp_path / "chromium.log",
        ready_timeout=60,
    )
    try:
        status = asyncio.run(
            _reject_in_browser(browser.url, reviewer.url + "/", victim, "reads the wrong panel")
        )
    finally:
        browser.stop()
        reviewer.stop()
    assert status.startswith("saved 1 decisions"), status
    page = (tmp_path / "page.html").read_text()
    assert page.count('<section class="traj"') == sum(map(len, before.values())) and 'src="http' not in page

    saved = load_decisions(decisions)
    victim_row = before["sft_crp"][1]
    assert list(saved) == [victim] and saved[victim].decision == "reject"
    assert saved[victim].note == "reads the wrong panel" and saved[victim].digest == trajectory_digest(
        victim_row
    )

    # the rebuild drops exactly that trajectory (and its images), everything else byte for byte
    cfg = build_config(SMALL_PARAMS, tmp_path / "rebuilt")
    cfg.ocr_cache_dir, cfg.review_decisions = tmp_path / "ocr-cache", decisions
    metrics = build_datasets(
        load_synthetic_source(small_built.parent / "synthetic"), cfg, validate=validate_dataset
    )
    after = {name: read_jsonl(tmp_path / "rebuilt" / f"{name}.jsonl") for name in before}
    assert [r["traj_id"] for r in after["sft_crp"]] == [
        r["traj_id"] for r in before["sft_crp"] if r["traj_id"] != victim
    ]
    assert [trajectory_digest(r) for r in after["sft_drp"]] == [
        trajectory_digest(r) for r in before["sft_drp"]
    ]
    assert metrics["dropped"]["review_rejected"] == 1 and metrics["n_crp"] == len(before["sft_crp"]) - 1
    assert metrics["review_stale"] == 0 and not (tmp_path / "rebuilt" / "images" / victim).exists()
    for name in ("samples_train", "samples_val", "samples_test", "rl_d", "rl_c"):
        assert (tmp_path / "rebuilt" / f"{name}.jsonl").read_bytes() == (
            small_built / f"{name}.jsonl"
        ).read_bytes()


def test_a_decision_on_a_changed_trajectory_is_stale_and_drops_nothing(small_built, tmp_path) -> None:
    from videor4.data.review import Decision

    rows = {name: read_jsonl(small_built / f"{name}.jsonl") for name in ("sft_drp", "sft_crp")}
    first = rows["sft_drp"][0]
    changed = {**first, "final_thought": first["final_thought"] + " (edited)"}
    decisions = {
        first["traj_id"]: Decision(first["traj_id"], "reject", trajectory_digest(changed)),
        "drp-999999": Decision("drp-999999", "reject", "0" * 64),
    }
    path = save_decisions(tmp_path / "d.json", decisions)
    counts = apply_decisions(rows, load_decisions(path))
    assert counts["review_rejected"] == 0 and counts["review_stale"] == 2
    assert rows["sft_drp"][0]["traj_id"] == first["traj_id"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{oops", "Expecting property name"),
        (
            '{"version": 1, "decisions": {"drp-1": {"decision": "maybe", "digest": "' + "0" * 64 + '"}}}',
            "decision is accept or reject",
        ),
        ('{"version": 1, "decisions": {"drp-1": {"decision": "reject"}}}', "digest is present"),
        ('{"version": 7, "decisions": {}}', "unsupported version 7"),
    ],
)
def test_a_bad_decisions_file_fails_the_build_with_one_line_naming_it(
    small_built, tmp_path, text, message
) -> None:
    from videor4.data.build import build_config, build_datasets, load_synthetic_source

    path = tmp_path / "decisions.json"
    path.write_text(text)
    cfg = build_config(SMALL_PARAMS, tmp_path / "out")
    cfg.review_decisions = path
    with pytest.raises(ValueError) as err:
        build_datasets(load_synthetic_source(small_built.parent / "synthetic"), cfg)
    assert str(err.value).splitlines()[0].startswith(str(path)) and message in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing was built or half-written


# ---------------------------------------------------------------- the server saves only what the page sent
PAGE = '<html><head><meta name="review-token" content=""></head><body data-digest="d1"></body></html>'


def one_decision(traj_id: str, decision: str, digest: str = "1" * 64) -> dict:
    return {"version": 1, "decisions": {traj_id: {"decision": decision, "digest": digest, "note": ""}}}


REJECT, ACCEPT = one_decision("drp-000001", "reject"), one_decision("drp-000001", "accept")


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 30.0) -> tuple[int, dict]:
    """One real HTTP request over a new socket, its request line and headers exactly as given
    (no client library fixes them up); the status and the JSON answer.  A connection the
    server drops without answering fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    assert data, "the server dropped the connection without an answer"
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1]
    answer = json.loads(payload) if payload.startswith(b"{") else {"page": payload.decode()}
    return int(status_line.split()[1]), answer


def post(
    port: int,
    doc,
    token: str | None,
    host: str | None = None,
    kind: str = "application/json",
    origin: str | None = None,
) -> tuple[int, dict]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    head = f"POST /decisions HTTP/1.1\nHost: {host or f'127.0.0.1:{port}'}\nContent-Type: {kind}\n"
    head += f"Content-Length: {len(body)}\n" + (f"X-Review-Token: {token}\n" if token else "")
    head += f"Origin: {origin}\n" if origin else ""
    return raw_request(port, head, body)


def page_token(port: int, host: str = "127.0.0.1") -> str | None:
    """The token the served page carries, as the page's script reads it."""
    status, answer = raw_request(port, f"GET / HTTP/1.1\nHost: {host}:{port}\n")
    assert status == 200, answer
    found = re.search(r'name="review-token" content="([^"]+)"', answer["page"])
    return found and found.group(1)


@contextlib.contextmanager
def serving(decisions: Path, **options) -> Iterator[int]:
    """make_server on 127.0.0.1 in a thread of this process; stopped and closed on exit."""
    from videor4.app.review import make_server

    server = make_server(PAGE, decisions, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


EVIL = "http://attacker.example"


def test_a_page_of_another_site_cannot_change_a_saved_decision(tmp_path) -> None:
    decisions = tmp_path / "review" / "decisions.json"
    with serving(decisions) as port:
        token = page_token(port)
        assert post(port, REJECT, token)[0] == 200
        saved = decisions.read_bytes()
        attacks = [  # what any web page can send without a preflight, and the token-less variants
            dict(token=None, kind="text/plain", origin=EVIL, host=f"attacker.example:{port}"),
            dict(token=None, kind="text/plain", origin=EVIL),
            dict(token=None, origin=EVIL),
            dict(token=None),
            dict(token="not-the-token"),
            dict(token=token, kind="text/plain"),
            dict(token=token, origin=EVIL),
        ]
        for attack in attacks:
            status, answer = post(port, ACCEPT, **attack)
            assert status in (403, 415) and "\n" not in answer["error"], (attack, status, answer)
        assert decisions.read_bytes() == saved  # still the reject
        assert post(port, ACCEPT, token, host=f"localhost:{port}")[0] == 200  # the page itself may
    assert load_decisions(decisions)["drp-000001"].decision == "accept"


def test_a_dns_rebinding_page_gets_neither_the_page_nor_its_token(tmp_path) -> None:
    with serving(tmp_path / "decisions.json") as port:
        status, answer = raw_request(port, f"GET / HTTP/1.1\nHost: rebind.attacker.example:{port}\n")
        assert status == 403 and "review-token" not in json.dumps(answer) and "d1" not in json.dumps(answer)
        status, _ = raw_request(port, f"GET / HTTP/1.1\nHost: 127.0.0.1:{port + 1}\n")  # another server's
        assert status == 403
        assert len(page_token(port, "localhost") or "") >= 32


@pytest.mark.parametrize(
    "head, body, status",
    [
        ("Content-Length: -1", b"", 400),
        ("Content-Length: abc", b"", 400),
        ("Content-Length: 99999999999", b"", 413),
        ("", b"", 411),
        ("Content-Length: 200000", b"[" * 200_000, 400),
        ("Content-Length: 6", b"{oops}", 400),
        ("Content-Length: 2", b"\xff\xfe", 400),
    ],
    ids=["negative", "not-a-number", "over-the-cap", "no-length", "deep-json", "bad-json", "bad-utf8"],
)
def test_a_bad_post_gets_a_4xx_with_one_line_never_a_dropped_connection(tmp_path, head, body, status) -> None:
    decisions = tmp_path / "decisions.json"
    with serving(decisions) as port:
        token = page_token(port)
        request = (
            f"POST /decisions HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json\n"
            f"X-Review-Token: {token}\n"
        )
        got, answer = raw_request(port, request + (f"{head}\n" if head else ""), body)
    assert got == status and answer["error"] and "\n" not in answer["error"], answer
    assert not decisions.exists()


def test_a_client_that_never_sends_its_body_does_not_block_a_save(tmp_path) -> None:
    decisions = tmp_path / "decisions.json"
    with serving(decisions, timeout=2.0) as port:
        token = page_token(port)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            stalled.sendall(
                f"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"X-Review-Token: {token}\r\nContent-Length: 100\r\n\r\n".encode()
            )
            time.sleep(0.2)  # the server is now waiting for 100 bytes that never come
            t0 = time.monotonic()
            assert post(port, REJECT, token)[0] == 200
            assert time.monotonic() - t0 < 2.0  # not held up by the stalled client
            answer = stalled.recv(1 << 16)  # dropped after the timeout, with an answer
        assert answer.split()[1] == b"408"
    assert load_decisions(decisions)["drp-000001"].decision == "reject"


SERVE = (
    "import os, sys; os.chdir(sys.argv[3]); from pathlib import Path;"
    " from videor4.app.review import make_server;"
    " make_server('<html></html>', Path(sys.argv[1]), port=int(sys.argv[2])).serve_forever()"
)


def test_two_servers_saving_at_once_on_one_file_lose_nothing(tmp_path) -> None:
    """Two review servers (two processes, both started outside the repository, so each must find
    the GX suite from the project root) post at the same time: every decision is kept."""
    decisions = tmp_path / "review" / "decisions.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    servers = []
    try:
        for name in ("a", "b"):
            port = free_port()
            cmd = [sys.executable, "-c", SERVE, str(decisions), str(port), str(elsewhere)]
            servers.append(Server(cmd, port, dict(os.environ), tmp_path / f"{name}.log"))
        tokens = [page_token(s.port) for s in servers]

        def save_many(i: int) -> list[int]:
            statuses = []
            for n in range(8):
                doc = one_decision(f"drp-{i}{n:05d}", "reject", f"{n}" * 64)
                statuses.append(post(servers[i].port, doc, tokens[i])[0])
            return statuses

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(save_many, range(2)))
    finally:
        for server in servers:
            server.stop()
    assert results == [[200] * 8, [200] * 8]
    assert sorted(load_decisions(decisions)) == sorted(f"drp-{i}{n:05d}" for i in range(2) for n in range(8))


def test_serving_beyond_loopback_is_warned_about_and_paths_come_from_the_project(tmp_path, capsys) -> None:
    from videor4.app.review import decisions_file, make_server

    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        make_server(PAGE, tmp_path / "d.json", host=host, port=0).server_close()
        assert ("warning: serving on 0.0.0.0" in capsys.readouterr().err) == warned
    root = Path(__file__).resolve().parent.parent
    assert decisions_file(Path("review/decisions.json")) == root / "review" / "decisions.json"
    assert decisions_file(tmp_path / "d.json") == tmp_path / "d.json"
