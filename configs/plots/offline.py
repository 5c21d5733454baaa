"""Write DVC's HTML template for `dvc plots show` with Vega, Vega-Lite and Vega-Embed inlined, so
the page it writes draws its plots with no network (DVC's own page loads them from a CDN).

    python configs/plots/offline.py .dvc/plots/offline.html      (run by `make setup`)

The three packages come from the npm registry (`npm pack`), each checked against the sha512
pinned below, at the versions DVC's page uses.  .dvc/config names the result as
`plots.html_template`; the page it renders is one self-contained file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# package → (its bundle in the tarball, the tarball's npm integrity)
PACKAGES = {
    "vega@5.20.2": (
        "package/build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    "vega-lite@5.2.0": (
        "package/build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    "vega-embed@6.18.2": (
        "package/build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
}

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>Video-R4 plots</title>
%s
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(spec: str, member: str, integrity: str, work: Path) -> str:
    """The bundle `member` of npm package `spec`, after checking the tarball's sha512."""
    done = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(work), spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"error: npm pack {spec} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    tarball = work / json.loads(done.stdout)[0]["filename"]
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"error: {spec}: tarball sha512 {digest} is not the pinned {integrity}")
    with tarfile.open(tarball) as tar:
        return tar.extractfile(member).read().decode("utf-8")


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundles = [
            fetch(spec, member, integrity, Path(tmp)) for spec, (member, integrity) in PACKAGES.items()
        ]
    # a literal "</script" inside a bundle would end its inline <script> element early
    escaped = [js.replace("</script", "<\\/script") for js in bundles]
    scripts = "\n".join(f"    <script>{js}</script>" for js in escaped)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(PAGE % scripts, encoding="utf-8")
    tmp_path.replace(path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB: {', '.join(PACKAGES)} inlined)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python configs/plots/offline.py OUT.html")
    main(sys.argv[1])
