"""Nothing gets in and nothing is lost: a param cannot reach a shell, a model URI cannot point
outside what was downloaded, a loader cannot be walked out of its dataset folder, and JSON lines
are streamed to exactly the rows they held.  Real DVC, a real MLflow store, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videor4.core.io import iter_jsonl, parse_json_lines, path_inside, read_json_or_lines, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


# ---------------------------------------------------------------- a param never reaches a shell
def test_no_stage_command_interpolates_a_param() -> None:
    """DVC substitutes `${...}` into `cmd` before its shell runs it, unquoted: a value there is code."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert not [name for name, stage in stages.items() if "${" in str(stage.get("cmd", ""))]


def test_curriculum_crp_sft_init_takes_only_its_allowed_checkpoints() -> None:
    from videor4.core.params import ParamsError
    from videor4.evaluation.evaluate import curriculum_inits
    from videor4.train.lifecycle import CRP_SFT_INITS, curriculum_params

    assert curriculum_params({}).crp_sft_init == "models/rl_d"
    for init in CRP_SFT_INITS:
        assert curriculum_params({"curriculum": {"crp_sft_init": init}}).crp_sft_init == init
    for bad in ("x; touch pwned", "models/rl_d; id", "../models/rl_d", "/etc"):
        refused = r"^params curriculum\.crp_sft_init: .* is not one of models/rl_d"
        with pytest.raises(ParamsError, match=refused) as err:
            curriculum_inits({"curriculum": {"crp_sft_init": bad}})
        assert "\n" not in str(err.value)


def _crp_sft_repo(dst: Path, injected: str) -> None:
    """A git + DVC repo holding the project's crp_sft stage as dvc.yaml declares it, its script,
    params.yaml and its code deps; the other deps (data, the init checkpoint) as placeholders.
    Only this stage: `dvc exp run` would otherwise check out the other stages' missing outputs."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["crp_sft"]
    (dst / "dvc.yaml").parent.mkdir(parents=True)
    (dst / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"crp_sft": stage}}, sort_keys=False))
    shutil.copy(ROOT / "params.yaml", dst / "params.yaml")
    for dep in [*stage["deps"], injected]:
        if "${" in dep:
            continue
        target = dst / dep
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / dep).is_file():
            shutil.copy(ROOT / dep, target)
        elif not target.exists():  # data/built, the checkpoint: DVC must find the deps to run the command
            target.mkdir()
            (target / "placeholder").write_text("x")
    setup = (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-qm", "."])
    for cmd in setup:
        subprocess.run(cmd, cwd=dst, env=ENV, check=True, capture_output=True)


def test_dvc_exp_run_with_shell_code_in_crp_sft_init_runs_nothing(tmp_path) -> None:
    """`dvc exp run -S curriculum.crp_sft_init='x; touch pwned;'` (the trailing `;` ends the injected
    command before the stage's next option, which `touch` would refuse): the stage fails in one
    line naming the key, and nothing was run.  The placeholder folder of that name lets DVC get as
    far as running the command."""
    repo = tmp_path / "repo"
    injected = "x; touch pwned;"
    _crp_sft_repo(repo, injected)
    done = subprocess.run(
        ["dvc", "exp", "run", "-S", f"curriculum.crp_sft_init='{injected}'"],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert "Running stage 'crp_sft'" in output, output  # the command really was attempted
    assert done.returncode != 0 and not (repo / "pwned").exists(), output
    errors = [line for line in output.splitlines() if line.startswith("error: crp_sft:")]
    assert errors == [
        f"error: crp_sft: params curriculum.crp_sft_init: {injected!r} is not one of "
        "models/rl_d, models/drp_sft, models/pretrain, models/base"
    ], output


# ---------------------------------------------------------------- loaders stay in their folders
def test_every_name_from_an_input_file_stays_in_its_folder(tmp_path) -> None:
    assert path_inside(tmp_path, "videos/a.mp4") == tmp_path / "videos/a.mp4"
    assert path_inside(tmp_path, "a/../b.mp4") == tmp_path / "b.mp4"
    for name in ("../outside.mp4", "/etc/passwd", "a/../../outside.mp4", "", "."):
        with pytest.raises(ValueError, match="is not a path inside"):
            path_inside(tmp_path, name)


def test_a_multiple_choice_file_cannot_name_a_video_outside_its_folder(tmp_path) -> None:
    from videor4.data.sources.mcvqa import load_mcvqa

    root = tmp_path / "mc"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "ok.mp4").write_bytes(b"\0")
    (tmp_path / "secret.mp4").write_bytes(b"\0")  # exists, so only the containment check can refuse it
    names = ["ok", "../../secret", str(tmp_path / "secret.mp4"), "ok/../../../secret"]
    items = [
        {"video": name, "question": "Which?", "options": ["a", "b"], "answer": "A", "qid": i}
        for i, name in enumerate(names)
    ]
    (root / "mc.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    samples, skipped = load_mcvqa(root, "mc.jsonl")
    assert [s.video for s in samples] == [str(root / "videos" / "ok.mp4")]
    assert skipped == {"malformed_item:video": 3}


# ---------------------------------------------------------------- JSON lines, streamed
TRICKY = '{"a": 1}\r\n\n   \n{"b": "line\u2028separator and \\u2029"}\n{"c": [1, 2]}\r{"d": null}\n{"e": "é"}'


def test_streamed_json_lines_are_the_rows_the_whole_text_gave(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(TRICKY.encode())
    expected = parse_json_lines(path.read_text(encoding="utf-8"), str(path))[0]
    assert read_jsonl(path) == list(iter_jsonl(path)) == expected and len(expected) == 5
    path.write_text('{"a": 1}\n{oops\n{"b": 2}\n')
    with pytest.raises(ValueError, match=rf"^{path}:2: not valid JSON"):
        read_jsonl(path)
    bad: list[int] = []
    assert list(iter_jsonl(path, strict=False, bad=bad)) == [{"a": 1}, {"b": 2}] and bad == [2]


@pytest.mark.parametrize(
    "text, whole, value",
    [
        ('[{"a": 1}, {"a": 2}]', True, [{"a": 1}, {"a": 2}]),
        ('{\n  "data": [\n    {"a": 1}\n  ]\n}\n', True, {"data": [{"a": 1}]}),  # pretty-printed: read whole
        ('{"a": 1}\n{"a": 2}\n', False, [{"a": 1}, {"a": 2}]),
        ('{"a": 1}\n', True, {"a": 1}),
        ("", False, []),
    ],
)
def test_a_file_is_one_json_document_or_json_lines(tmp_path, text, whole, value) -> None:
    path = tmp_path / "f.json"
    path.write_text(text)
    assert read_json_or_lines(path) == (whole, value, [])


# ---------------------------------------------------------------- model URIs
@pytest.fixture(scope="module")
def logged_model(tmp_path_factory) -> tuple[str, Path, dict[str, str]]:
    """A real sqlite MLflow store holding one checkpoint logged and registered as video-r4-sft/1."""
    from videor4.pipeline.registry import log_checkpoint_model
    from videor4.pipeline.tracking import TrackingConfig, start_run

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    checkpoint = root / "ck"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    artifacts = (root / "artifacts").as_uri()
    config = TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="models", strict=True)
    with start_run("sft", config) as run:
        info = run.log_model(
            lambda run_id, tracking_uri: log_checkpoint_model(
                run_id, tracking_uri, checkpoint=checkpoint, stage="sft", model_config={}, version_tags={}
            )
        )
    return uri, root, {**info, "run_id": run.run_id}


@pytest.fixture()
def stored(logged_model) -> Path:
    """The logged model's folder in the store's artifacts; whatever a test changes there is put back."""
    _, root, _ = logged_model
    model = next((root / "artifacts").rglob("MLmodel")).parent
    saved = root / "saved-model"
    shutil.copytree(model, saved)
    yield model
    shutil.rmtree(model, ignore_errors=True)
    shutil.move(saved, model)


def test_a_model_uri_is_downloaded_once_into_the_cache_and_reused(logged_model, stored, tmp_path) -> None:
    from videor4.pipeline.registry import resolve_checkpoint

    uri, _, info = logged_model
    cache = tmp_path / "cache"
    first = resolve_checkpoint(info["model_uri"], uri, cache)
    assert first == cache / info["run_id"] / "model" / "artifacts" / "ck"
    assert (first / "config.json").is_file()
    registered = resolve_checkpoint(info["registered_uri"], uri, cache)  # by the run it was registered from
    assert registered.relative_to(cache).parts[0] == info["run_id"] and (registered / "config.json").is_file()
    shutil.rmtree(stored)  # the store's copy is gone: only the cache can answer now
    assert resolve_checkpoint(info["model_uri"], uri, cache) == first
    assert not [p for p in (cache / info["run_id"]).iterdir() if p.name.startswith(".")]  # no half downloads


@pytest.mark.parametrize("path", ["/etc", "../../../../etc", "artifacts/../../../etc"])
def test_a_checkpoint_path_outside_the_download_is_refused(logged_model, stored, tmp_path, path) -> None:
    from videor4.pipeline.registry import resolve_checkpoint

    uri, _, info = logged_model
    mlmodel = stored / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("path: artifacts/ck", f"path: {path}"))
    outside = rf"^{info['model_uri']}: its MLmodel puts the checkpoint at '{path}', outside"
    with pytest.raises(ValueError, match=outside):
        resolve_checkpoint(info["model_uri"], uri, tmp_path / "cache")


def test_a_downloaded_reference_may_name_a_hub_model_not_a_path(logged_model, stored, tmp_path) -> None:
    from videor4.pipeline.registry import resolve_checkpoint

    uri, _, info = logged_model
    reference = stored / "artifacts" / "ck" / "base_model.json"
    for n, (name, refused) in enumerate(
        [
            ("Qwen/Qwen2.5-VL-3B-Instruct", False),
            (str(tmp_path), True),
            ("../../outside", True),
            ("tests", True),
        ]
    ):
        reference.write_text(json.dumps({"name_or_path": name, "revision": None}))
        if not refused:
            assert resolve_checkpoint(info["model_uri"], uri, tmp_path / f"cache{n}").name == "ck"
            continue
        refused = rf"^{info['model_uri']}: base_model.json names .* not a Hub model id"
        with pytest.raises(ValueError, match=refused):
            resolve_checkpoint(info["model_uri"], uri, tmp_path / f"cache{n}")


def test_a_logged_model_is_rebuilt_from_code_not_unpickled(tiny_dir, sample_video, tmp_path) -> None:
    """Models from code: the stored model carries the code file and no pickle, and MLflow's own
    loader rebuilds it from that file and answers a question about a real video."""
    import mlflow.pyfunc
    import pandas as pd

    from videor4.pipeline.registry import log_checkpoint_model
    from videor4.pipeline.tracking import TrackingConfig, start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrackingConfig(
        tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri(), experiment="m", strict=True
    )
    with start_run("sft", config) as run:
        info = run.log_model(
            lambda run_id, tracking_uri: log_checkpoint_model(
                run_id, tracking_uri, checkpoint=tiny_dir, stage="sft", model_config={}, version_tags={}
            )
        )
    files = {p.name for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert "mlflow_model.py" in files and not [name for name in files if name.endswith(".pkl")]
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(info["model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    answers = model.predict(
        pd.DataFrame({"video": [str(sample_video)], "question": ["What colour is the block?"]})
    )
    assert len(answers) == 1 and (answers[0] is None or isinstance(answers[0], str))
