"""Human QC round trip: `video-r4 data review --serve` in real headless Chromium, driven over the
DevTools protocol (mouse clicks and typed text, as a person would), then a rebuild that drops
exactly the rejected trajectory."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
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
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
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
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
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
        [cli, "data", "review", "--data-dir", str(small_built), "--limit", "0", "--decisions", str(decisions),
         "--out", str(tmp_path / "page.html"), "--serve", "--port", str(port)],
        port, {**__import__("os").environ}, tmp_path / "review.log", ready_timeout=180,
    )
    browser = Server(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-allow-origins=*",
         f"--remote-debugging-port={devtools_port}", f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        devtools_port, {**__import__("os").environ}, tmp_path / "chromium.log", ready_timeout=60,
    )
    try:
        status = asyncio.run(_reject_in_browser(browser.url, reviewer.url + "/", victim, "reads the wrong panel"))
    finally:
        browser.stop()
        reviewer.stop()
    assert status.startswith("saved 1 decisions"), status
    page = (tmp_path / "page.html").read_text()
    assert page.count('<section class="traj"') == sum(map(len, before.values())) and "src=\"http" not in page

    saved = load_decisions(decisions)
    victim_row = before["sft_crp"][1]
    assert list(saved) == [victim] and saved[victim].decision == "reject"
    assert saved[victim].note == "reads the wrong panel" and saved[victim].digest == trajectory_digest(victim_row)

    # the rebuild drops exactly that trajectory (and its images), everything else byte for byte
    cfg = build_config(SMALL_PARAMS, tmp_path / "rebuilt")
    cfg.ocr_cache_dir, cfg.review_decisions = tmp_path / "ocr-cache", decisions
    metrics = build_datasets(load_synthetic_source(small_built.parent / "synthetic"), cfg, validate=validate_dataset)
    after = {name: read_jsonl(tmp_path / "rebuilt" / f"{name}.jsonl") for name in before}
    assert [r["traj_id"] for r in after["sft_crp"]] == [r["traj_id"] for r in before["sft_crp"] if r["traj_id"] != victim]
    assert [trajectory_digest(r) for r in after["sft_drp"]] == [trajectory_digest(r) for r in before["sft_drp"]]
    assert metrics["dropped"]["review_rejected"] == 1 and metrics["n_crp"] == len(before["sft_crp"]) - 1
    assert metrics["review_stale"] == 0 and not (tmp_path / "rebuilt" / "images" / victim).exists()
    for name in ("samples_train", "samples_test", "rl_d", "rl_c"):
        assert (tmp_path / "rebuilt" / f"{name}.jsonl").read_bytes() == (small_built / f"{name}.jsonl").read_bytes()


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
        ('{"version": 1, "decisions": {"drp-1": {"decision": "maybe", "digest": "' + "0" * 64 + '"}}}', "decision is accept or reject"),
        ('{"version": 1, "decisions": {"drp-1": {"decision": "reject"}}}', "digest is present"),
        ('{"version": 7, "decisions": {}}', "unsupported version 7"),
    ],
)
def test_a_bad_decisions_file_fails_the_build_with_one_line_naming_it(small_built, tmp_path, text, message) -> None:
    from videor4.data.build import build_config, build_datasets, load_synthetic_source

    path = tmp_path / "decisions.json"
    path.write_text(text)
    cfg = build_config(SMALL_PARAMS, tmp_path / "out")
    cfg.review_decisions = path
    with pytest.raises(ValueError) as err:
        build_datasets(load_synthetic_source(small_built.parent / "synthetic"), cfg)
    assert str(err.value).splitlines()[0].startswith(str(path)) and message in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing was built or half-written
