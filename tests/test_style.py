"""The lint step: ruff (its rules and the 110-column limit from pyproject.toml) and functions a
reader can hold (at most 60 lines in src/ and stages/)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = str(Path(sys.executable).with_name("ruff"))
MAX_FUNCTION_LINES = 60


def long_functions(paths: list[Path], root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`file:line name (n lines)` for every function longer than `limit`, nested ones included."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_ruff_passes_with_the_projects_rules_and_line_length():
    config = (ROOT / "pyproject.toml").read_text()
    assert "line-length = 110" in config
    done = subprocess.run(
        [RUFF, "check", "--select", "E4,E7,E9,E501,F,I", "src", "stages", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_no_function_is_longer_than_the_limit():
    sources = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")])
    found = long_functions(sources)
    assert not found, "split these by what they do:\n" + "\n".join(found)


def test_the_length_check_counts_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "probe.py"
    path.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert long_functions([path], tmp_path) == [f"probe.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
