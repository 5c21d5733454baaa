"""Each stage's code deps, exact: the files of its script's import closure.

A stage depends on its script, every project file that running the script can import
(module-level and function-level imports, absolute and relative, so a lazy
`from videor4.x import y` inside a function counts) and the lock file of the environment.
`video-r4 lineage deps --write` writes that list into dvc.yaml; the tests check that
dvc.yaml equals it, so a dep can be neither missing nor extra, and an edit re-runs exactly
the stages whose code can execute the edited file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videor4.pipeline.lineage import LOCK_FILE, entry_path

PACKAGE = "videor4"
CODE_ROOTS = ("stages/", "src/")  # deps under these are code: generated, never written by hand


def _module_file(src: Path, module: str) -> Path | None:
    """The file a `videor4...` module name executes (a package: its __init__.py)."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, src: Path) -> list[str]:
    """The package a file's relative imports start from (empty outside `src`)."""
    if not path.is_relative_to(src):
        return []
    parts = list(path.relative_to(src).with_suffix("").parts)
    return parts[:-1]


def imported_modules(path: Path, src: Path) -> set[str]:
    """Every module name a file imports, anywhere in it (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, src)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            # `from videor4.data import build` imports the module videor4.data.build
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def project_files(src: Path, module: str) -> list[Path]:
    """The project files importing `module` executes: each enclosing package's __init__ and the module."""
    parts = module.split(".")
    found = (_module_file(src, ".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return [path for path in found if path is not None]


def import_closure(script: Path, src: Path) -> set[Path]:
    """Every project file (under `src`, or the script itself) that running `script` can execute."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path, src):
            if module == PACKAGE or module.startswith(PACKAGE + "."):
                todo.extend(f for f in project_files(src, module) if f not in seen)
    return seen


def stage_script(cmd: str) -> str:
    """The script a stage's cmd runs: the word after `python`."""
    words = cmd.split()
    if "python" not in words or words.index("python") + 1 >= len(words):
        raise ValueError(f"cmd does not run a python script: {cmd!r}")
    return words[words.index("python") + 1]


def code_deps(script: str, root: Path) -> list[str]:
    """The stage's code deps, in dvc.yaml's order: the script, its closure under src/, the lock file."""
    closure = import_closure(root / script, root / "src")
    library = sorted(p.relative_to(root).as_posix() for p in closure if p != root / script)
    return [script, *library, LOCK_FILE]


def is_code_dep(path: str) -> bool:
    return path == LOCK_FILE or path.startswith(CODE_ROOTS)


def expected_deps(definition: dict[str, Any], root: Path) -> list[str]:
    """A stage's deps as they should be: its code deps, then its declared data deps as they are."""
    data = [entry_path(dep) for dep in definition.get("deps") or [] if not is_code_dep(entry_path(dep))]
    return [*code_deps(stage_script(definition["cmd"]), root), *data]


def _stages(document: Any) -> dict[str, Any]:
    return (document or {}).get("stages") or {}


def stale_stages(root: Path, dvc_yaml: str = "dvc.yaml") -> dict[str, tuple[list[str], list[str]]]:
    """Stages whose declared deps differ from the generated ones: name → (missing, extra)."""
    import yaml

    stages = _stages(yaml.safe_load((root / dvc_yaml).read_text(encoding="utf-8")))
    stale = {}
    for name, definition in stages.items():
        declared = [entry_path(dep) for dep in definition.get("deps") or []]
        expected = expected_deps(definition, root)
        if declared != expected:
            stale[name] = (_minus(expected, declared), _minus(declared, expected))
    return stale


def _minus(a: Iterable[str], b: Iterable[str]) -> list[str]:
    exclude = set(b)
    return [x for x in a if x not in exclude]


def write_code_deps(root: Path, dvc_yaml: str = "dvc.yaml") -> list[str]:
    """Rewrite every stage's deps in dvc.yaml as `expected_deps` (comments and layout kept);
    returns the stages whose deps changed."""
    from ruamel.yaml import YAML

    from videor4.core.io import atomic_write_text

    yaml = YAML()  # round trip: comments, anchors and key order survive
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = root / dvc_yaml
    document = yaml.load(path.read_text(encoding="utf-8"))
    changed = []
    for name, definition in _stages(document).items():
        expected = expected_deps(definition, root)
        if [entry_path(dep) for dep in definition.get("deps") or []] != expected:
            definition["deps"] = expected
            changed.append(name)
    if changed:
        import io

        buffer = io.StringIO()
        yaml.dump(document, buffer)
        atomic_write_text(path, buffer.getvalue())
    return changed
