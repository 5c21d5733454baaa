"""Lineage cannot lie: every project file a stage's code can import is covered by a dep
declared for that stage in dvc.yaml, and the library's layers import only downward.

The import closure is computed from the source (module-level and function-level imports,
absolute and relative), so a lazy `from videor4.x import y` inside a function counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "videor4"
# the library's layers, lowest first: a module may import its own layer and the ones before it
LAYERS = ("core", "rumination", "data", "policy", "train", "evaluation", "pipeline", "app")
# third-party packages only the pipeline layer (the DVC / MLflow side) may import
PIPELINE_ONLY = {"dvc", "dvc_data", "dvc_objects", "mlflow"}


def _module_file(module: str) -> Path | None:
    """The file a `videor4...` module name executes (package → its __init__.py)."""
    parts = module.split(".")
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module name a file imports, anywhere in it (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path).split(".") if path.is_relative_to(SRC) else []
    if path.is_relative_to(SRC) and path.name != "__init__.py":
        package = package[:-1]
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


def project_files(module: str) -> list[Path]:
    """The project files importing `module` executes: every enclosing package's __init__ and the module."""
    parts = module.split(".")
    files = []
    for i in range(1, len(parts) + 1):
        found = _module_file(".".join(parts[:i]))
        if found is not None:
            files.append(found)
    return files


def import_closure(script: Path) -> set[Path]:
    """Every project file (under src/videor4, or the script itself) that running `script` can execute."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            if module == "videor4" or module.startswith("videor4."):
                todo.extend(f for f in project_files(module) if f not in seen)
    return seen


def _stages() -> dict[str, dict]:
    return (yaml.safe_load((ROOT / "dvc.yaml").read_text()) or {})["stages"]


def _script(cmd: str) -> Path:
    words = cmd.split()
    return ROOT / words[words.index("python") + 1]


def uncovered(stage: str, definition: dict) -> list[str]:
    deps = [ROOT / (d if isinstance(d, str) else next(iter(d))) for d in definition.get("deps", [])]
    missing = []
    for path in sorted(import_closure(_script(definition["cmd"]))):
        if not any(path == dep or dep in path.parents for dep in deps):
            missing.append(str(path.relative_to(ROOT)))
    return missing


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_imported_file_is_a_declared_dep(stage):
    missing = uncovered(stage, _stages()[stage])
    assert not missing, f"stage {stage}: imports files no declared dep covers: {', '.join(missing)}"


def test_closure_check_fails_when_a_dep_is_removed():
    """The check has teeth: drop the rumination folder from a training stage and it names the files."""
    definition = dict(_stages()["drp_sft"])
    definition["deps"] = [d for d in definition["deps"] if d != "src/videor4/rumination"]
    missing = uncovered("drp_sft", definition)
    assert "src/videor4/rumination/tools.py" in missing and "src/videor4/rumination/video.py" in missing


def test_the_closure_follows_lazy_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from videor4.rumination.tools import crop\n")
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(script) if p != script}
    assert {"src/videor4/__init__.py", "src/videor4/rumination/__init__.py", "src/videor4/rumination/tools.py"} <= closure
    assert "src/videor4/rumination/video.py" in closure  # imported by tools.py


def test_stages_need_no_sys_path_and_name_paths_only_in_dvc_yaml():
    for script in sorted((ROOT / "stages").glob("*.py")):
        text = script.read_text()
        assert "sys.path" not in text, f"{script.name} edits sys.path"
        assert '"data/' not in text and '"models/' not in text and '"metrics/' not in text, (
            f"{script.name} names a pipeline path; it belongs on the stage's cmd in dvc.yaml"
        )


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else None


def layering_violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        rank = LAYERS.index(layer) if layer else len(LAYERS)
        for module in sorted(imported_modules(path)):
            top = module.split(".")[0]
            where = path.relative_to(ROOT)
            if top in PIPELINE_ONLY and layer not in ("pipeline", "app"):
                problems.append(f"{where} imports {module} (only videor4.pipeline may know DVC / MLflow)")
            parts = module.split(".")
            if parts[0] != "videor4" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if LAYERS.index(parts[1]) > rank:
                problems.append(f"{where} ({layer}) imports {module} from the higher layer {parts[1]}")
    return problems


def test_layers_import_only_downward():
    problems = layering_violations()
    assert not problems, "\n".join(problems)


def test_the_library_has_no_flat_modules_but_its_version():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not flat, f"modules outside a sub-package: {flat}"
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)
