"""The pages people look at, opened in real headless Chromium.

`dvc plots show` draws every plot with no network: the project's page template (Vega, Vega-Lite
and Vega-Embed inlined at set-up, configs/plots/offline.py) with the network off, against DVC's
own page (Vega from a CDN) opened the same way as the control.  The MLflow UI, served by a real
`mlflow server`, opens the experiment on its runs table at the URL `make pipeline` prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / ".dvc/plots/offline.html"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--virtual-time-budget=15000",
]


def _network_off_prefix() -> list[str]:
    """A network namespace with only a down loopback (root, or user namespaces allowed); else none,
    and Chromium is pointed at a proxy that does not exist instead."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def _rendered_dom(page: Path | str, profile: Path, offline: bool = True) -> str:
    """The page's DOM after its scripts ran (a file, offline by default; or a URL)."""
    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed: `make browser` installs Debian's chromium package"
    prefix = _network_off_prefix() if offline else []
    no_net = (
        ["--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
        if offline and not prefix
        else []
    )
    url = page.as_uri() if isinstance(page, Path) else page
    done = subprocess.run(
        [*prefix, chromium, *CHROMIUM_FLAGS, *no_net, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _plots_page(tmp_path: Path, name: str, template: Path | None = None) -> Path:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    cmd = ["dvc", "plots", "show", "-o", str(tmp_path / name)] + (
        ["--html-template", str(template)] if template else []
    )
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tmp_path / name / "index.html"


def _drawn(dom: str, plot_ids: list[str]) -> dict[str, bool]:
    """Per plot: does its div hold a rendered <canvas> or <svg> now?"""
    starts = [dom.index(f'<div id="{i}"') for i in plot_ids]
    ends = starts[1:] + [len(dom)]
    return {i: bool(re.search(r"<(canvas|svg)\b", dom[a:b])) for i, a, b in zip(plot_ids, starts, ends)}


def test_plots_page_draws_every_plot_with_the_network_off(tmp_path) -> None:
    assert TEMPLATE.is_file(), "`make setup` writes the offline template (configs/plots/offline.py)"
    page = _plots_page(tmp_path, "ours")  # .dvc/config names the template
    html = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html  # nothing to fetch
    plot_ids = re.findall(r'<div id\s*=\s*"([^"]+)"', html)
    # the curves, the scaling curve and the accuracy bars: dvc.yaml's top-level plots, each once
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    assert len(plot_ids) == len(declared) >= 6, plot_ids
    drawn = _drawn(_rendered_dom(page, tmp_path / "profile-ours"), plot_ids)
    assert all(drawn.values()), [i for i, ok in drawn.items() if not ok]

    # the control: DVC's own page loads Vega from a CDN, so with the network off it stays blank
    from dvc_render.html import PAGE_HTML

    stock = tmp_path / "stock.html"
    stock.write_text(PAGE_HTML, encoding="utf-8")
    page = _plots_page(tmp_path, "stock", stock)
    assert "cdn.jsdelivr.net" in page.read_text(encoding="utf-8")
    drawn = _drawn(_rendered_dom(page, tmp_path / "profile-stock"), plot_ids)
    assert not any(drawn.values())


def test_mlflow_ui_opens_the_experiment_on_its_runs_table(tmp_path) -> None:
    """MLflow 3.17 picks its view with a GenAI / Model training switch (GenAI by default), not from
    the experiment's kind tag: the URL with workflowType=machine_learning shows the runs."""
    import psutil
    from mlflow.tracking import MlflowClient

    from videor4.pipeline.tracking import TrackingConfig, start_run

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrackingConfig(
        tracking_uri=store, artifact_location=(tmp_path / "artifacts").as_uri(), experiment="video-r4"
    )
    with start_run("pipeline workspace ui-check", config) as run:
        run.log_metrics({"synthetic.rl_c.rumination.acc": 0.25})
    experiment = MlflowClient(store).get_experiment_by_name("video-r4")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    port = free_port()
    exe = str(Path(sys.executable).parent / "mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server = Server(
        [
            exe,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            store,
        ],
        port,
        env,
        tmp_path / "mlflow-server.log",
    )
    started = server.processes()
    try:
        page = f"{server.url}/#/experiments/{experiment.experiment_id}"
        runs = _rendered_dom(f"{page}?workflowType=machine_learning", tmp_path / "profile-ml", offline=False)
        assert "pipeline workspace ui-check" in runs and ">Runs<" in runs
        default = _rendered_dom(page, tmp_path / "profile-default", offline=False)
        assert "pipeline workspace ui-check" not in default and "Traces" in default  # the GenAI overview
    finally:
        server.stop()
    assert started and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started)
