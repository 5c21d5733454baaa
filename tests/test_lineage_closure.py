"""Lineage cannot lie: every project file a stage's code can import is covered by a dep
declared for that stage in dvc.yaml, and the library's layers import only downward.

The import closure is computed from the source (module-level and function-level imports,
absolute and relative), so a lazy `from videor4.x import y` inside a function counts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videor4.pipeline.code_deps import (
    import_closure,
    imported_modules,
    is_code_dep,
    stage_script,
    stale_stages,
    write_code_deps,
)
from videor4.pipeline.lineage import entry_path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "videor4"
# the library's layers, lowest first: a module may import its own layer and the ones before it
LAYERS = ("core", "rumination", "data", "policy", "train", "evaluation", "pipeline", "app")
# third-party packages only the pipeline layer (the DVC / MLflow side) may import
PIPELINE_ONLY = {"dvc", "dvc_data", "dvc_objects", "mlflow"}
DVC = str(Path(sys.executable).with_name("dvc"))


def _stages() -> dict[str, dict]:
    return (yaml.safe_load((ROOT / "dvc.yaml").read_text()) or {})["stages"]


def closure(script: Path) -> set[Path]:
    return import_closure(script, SRC)


def uncovered(definition: dict) -> list[str]:
    """Files the stage's script can import that no declared dep covers."""
    deps = [ROOT / entry_path(d) for d in definition.get("deps", [])]
    missing = []
    for path in sorted(closure(ROOT / stage_script(definition["cmd"]))):
        if not any(path == dep or dep in path.parents for dep in deps):
            missing.append(str(path.relative_to(ROOT)))
    return missing


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_imported_file_is_a_declared_dep(stage):
    missing = uncovered(_stages()[stage])
    assert not missing, f"stage {stage}: imports files no declared dep covers: {', '.join(missing)}"


def test_dvc_yaml_declares_exactly_the_generated_code_deps():
    stale = stale_stages(ROOT)
    assert not stale, f"run `video-r4 lineage deps --write`: {stale}"


def _copy_pipeline(tmp_path: Path) -> Path:
    for name in ("dvc.yaml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return tmp_path


def _edit_deps(path: Path, stage: str, edit) -> None:
    document = yaml.safe_load(path.read_text())
    document["stages"][stage]["deps"] = edit(document["stages"][stage]["deps"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_the_generated_deps_check_fails_on_a_removed_and_on_an_extra_file(tmp_path):
    root = _copy_pipeline(tmp_path)
    _edit_deps(
        root / "dvc.yaml",
        "pretrain",
        lambda deps: [d for d in deps if d != "src/videor4/rumination/tools.py"],
    )
    _edit_deps(root / "dvc.yaml", "base_model", lambda deps: [*deps, "src/videor4/data/writer.py"])
    stale = stale_stages(root)
    assert set(stale) == {"pretrain", "base_model"}
    assert stale["pretrain"] == (["src/videor4/rumination/tools.py"], [])
    assert stale["base_model"] == ([], ["src/videor4/data/writer.py"])
    # and --write puts both right, keeping the data deps
    assert set(write_code_deps(root)) == {"pretrain", "base_model"} and not stale_stages(root)
    assert "models/base" in _stages_of(root)["pretrain"]["deps"]


def _stages_of(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def test_the_closure_check_fails_when_a_folder_dep_is_removed():
    """A hand-written folder dep covers its files; without it the check names them."""
    definition = dict(_stages()["drp_sft"])
    definition["deps"] = ["src/videor4/core", "src/videor4/pipeline"]
    missing = uncovered(definition)
    assert "src/videor4/rumination/tools.py" in missing and "src/videor4/core/io.py" not in missing


def test_the_closure_follows_lazy_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from videor4.rumination.tools import crop\n")
    found = {p.relative_to(ROOT).as_posix() for p in closure(script) if p != script}
    assert {
        "src/videor4/__init__.py",
        "src/videor4/rumination/__init__.py",
        "src/videor4/rumination/tools.py",
    } <= found
    assert "src/videor4/rumination/video.py" in found  # imported by tools.py


def _placeholder_outputs(root: Path) -> None:
    """Every data dep and out of the pipeline as a small file or folder, so `dvc commit` can lock it."""
    paths = set()
    for definition in _stages_of(root).values():
        for field in ("deps", "outs", "metrics", "plots"):
            paths.update(entry_path(e) for e in definition.get(field) or [])
    for rel in sorted(p for p in paths if not is_code_dep(p) and "${" not in p):
        path = root / rel
        if Path(rel).suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n" if rel.endswith(".json") else "placeholder\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").write_text(rel)


def _changed_stages(root: Path) -> set[str]:
    done = subprocess.run([DVC, "status", "--json"], cwd=root, capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.fixture
def locked_copy(tmp_path) -> Path:
    """A copy of the pipeline with placeholder data, its lock committed by real DVC: nothing to run."""
    root = _copy_pipeline(tmp_path)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    for folder in ("expectations", "review"):
        shutil.copytree(ROOT / folder, root / folder)
    _placeholder_outputs(root)
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "commit", "-f", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    assert _changed_stages(root) == set()
    return root


def test_a_training_seed_sweep_reruns_the_training_stages_only(locked_copy):
    params = yaml.safe_load((locked_copy / "params.yaml").read_text())
    params["train_seed"] = 1
    (locked_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _changed_stages(locked_copy) == {"direct_sft", "drp_sft", "rl_d", "crp_sft", "rl_c"}


def test_dvc_reruns_exactly_the_stages_that_execute_an_edited_file(locked_copy):
    """Real DVC on a copy of the pipeline (placeholder data): the writer edit leaves pretrain up to date,
    the crop tool's edit re-runs every stage that executes it."""
    root = locked_copy

    def users(rel: str) -> set[str]:
        return {name for name, d in _stages_of(root).items() if rel in d["deps"]}

    with open(root / "src/videor4/data/writer.py", "a") as fh:
        fh.write("# an edit\n")
    changed = _changed_stages(root)
    assert changed == users("src/videor4/data/writer.py") and "build_data" in changed
    assert not changed & {"base_model", "pretrain", "drp_sft", "rl_d", "crp_sft", "rl_c", "eval"}
    with open(root / "src/videor4/rumination/tools.py", "a") as fh:
        fh.write("# an edit\n")
    changed = _changed_stages(root)
    assert changed == users("src/videor4/rumination/tools.py") | users("src/videor4/data/writer.py")
    assert {"make_videos", "pretrain", "drp_sft", "rl_d", "crp_sft", "rl_c", "eval"} <= changed
    assert "figures" not in changed


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
        for module in sorted(imported_modules(path, SRC)):
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
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        LAYERS
    )
