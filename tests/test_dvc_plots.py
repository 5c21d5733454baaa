"""What `dvc plots show` draws: every plot means something, is titled in words and draws each
file once (no default plot beside a custom one), on the metrics committed with the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DVC = str(Path(sys.executable).with_name("dvc"))


def test_every_plot_is_a_titled_top_level_definition():
    document = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in document["stages"].items():
        assert not stage.get("plots"), (
            f"stage {name} declares plots: DVC would draw them untitled, with defaults"
        )
    titles = [next(iter(p)) for p in document["plots"]]
    assert all(" " in t and not t.endswith(".json") for t in titles), titles
    done = subprocess.run(
        [DVC, "plots", "show", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    drawn = json.loads(done.stdout)["data"]
    assert list(drawn) == titles  # nothing else: no file drawn on its own with steps against steps
    for title, (plot, *_) in drawn.items():
        spec = plot["content"]
        assert spec["title"]["text"] == title and spec["encoding"]["x"]["title"]
        assert spec["data"]["values"], f"{title}: no data"
