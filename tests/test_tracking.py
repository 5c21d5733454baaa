"""Tracking (real MLflow on sqlite) and the stage helpers (real DVC and git in tmp dirs)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from conftest import free_port
from videor4.pipeline.lineage import declared_params, dep_md5, lineage_tags, stage_definition
from videor4.pipeline.runner import stage_run, tracking_config, write_metrics
from videor4.pipeline.tracking import FAST_FAIL_ENV, PARENT_RUN_ENV, TrackingConfig, start_run

ROOT = Path(__file__).resolve().parent.parent

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """One sqlite store for the module: creating its tables takes a couple of seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"
)  # inside MLflow


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    """Unset what the runs read or set.  setenv first, so that monkeypatch restores the
    variable even if it was absent and the library sets it (start_run sets FAST_FAIL_ENV)."""
    for name in ("MLFLOW_TRACKING_URI", PARENT_RUN_ENV, *FAST_FAIL_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_import_does_not_load_mlflow() -> None:
    code = "import sys, videor4.pipeline.tracking; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_logs_params_metrics_tags_artifacts(store, tmp_path, caplog) -> None:
    uri, artifacts = store
    config = TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="logging")
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    params = {"rl": {"lr": 1e-3, "beta": 0.0}, "seed": 7, "prompt": "x" * 7000}
    with caplog.at_level(logging.WARNING, logger="videor4.pipeline.tracking"):
        with start_run("train", config, params=params, tags={"purpose": "test"}) as run:
            assert run.active
            for step in range(3):
                run.log_metrics({"loss": 1.0 / (step + 1), "reward": {"format": step}}, step=step)
            run.log_metrics({"bad": float("nan")})
            run.log_params({"extra": [1, 2]})
            run.set_tags({"phase": "rl"})
            run.log_artifact(artifact, "notes")
            run.log_dict({"a": 1}, "config.json")
    assert any("bad" in r.getMessage() for r in caplog.records)

    got = client(uri).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train"
    assert got.data.params["rl.lr"] == "0.001"
    assert got.data.params["seed"] == "7"
    assert got.data.params["extra"] == "[1, 2]"
    assert len(got.data.params["prompt"]) <= 6000 and got.data.params["prompt"].endswith("[truncated]")
    assert got.data.tags["purpose"] == "test" and got.data.tags["phase"] == "rl"
    assert "bad" not in got.data.metrics
    history = client(uri).get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.5),
        (2, 1 / 3),
    ]
    assert got.data.metrics["reward.format"] == 2
    listed = {a.path for a in client(uri).list_artifacts(run.run_id)}
    assert listed == {"notes", "config.json"}
    assert [a.path for a in client(uri).list_artifacts(run.run_id, "notes")] == ["notes/notes.txt"]
    assert run.metrics["loss"] == pytest.approx(1 / 3)  # the local record


def test_failed_body_marks_run_failed_and_parent_from_env(store, monkeypatch) -> None:
    uri, artifacts = store
    config = TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="nesting")
    with start_run("pipeline", config) as parent:
        monkeypatch.setenv(PARENT_RUN_ENV, parent.run_id)
        with pytest.raises(ValueError, match="boom"):
            with start_run("stage", config) as child:
                raise ValueError("boom")
    got = client(uri).get_run(child.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id
    assert client(uri).get_run(parent.run_id).info.status == "FINISHED"


def test_default_store_is_sqlite_in_cwd_and_env_overrides(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrackingConfig()
    assert config.resolved_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert config.resolved_artifact_location(config.resolved_uri()) == (tmp_path / "mlartifacts").as_uri()
    assert config.resolved_artifact_location("http://tracking:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert TrackingConfig(tracking_uri="sqlite:///x.db").resolved_uri() == "http://elsewhere:5000"


def test_unreachable_server_non_strict_is_a_quick_no_op(tmp_path, caplog) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    artifact = tmp_path / "a.txt"
    artifact.write_text("a")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="videor4.pipeline.tracking"):
        with start_run("train", TrackingConfig(tracking_uri=uri), params={"a": 1}, tags={"b": "c"}) as run:
            run.log_metrics({"loss": 0.5}, step=1)
            run.log_params({"c": 2})
            run.log_artifact(artifact)
            run.log_dict({"k": 1}, "k.json")
    assert time.monotonic() - started < 10
    assert not run.active and run.run_id is None
    assert run.metrics == {"loss": 0.5} and run.params == {"a": "1", "c": "2"}
    warnings = [
        r for r in caplog.records if r.name == "videor4.pipeline.tracking" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert uri in warnings[0].getMessage() and "Connection refused" in warnings[0].getMessage()


def test_unreachable_server_strict_raises(monkeypatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"MLflow tracking at http://127\.0\.0\.1:\d+ failed \(start\)"
    ) as info:
        with start_run("train", TrackingConfig(tracking_uri=uri, strict=True)):
            pass
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 10


def test_backend_failure_during_logging_degrades(tmp_path, caplog) -> None:
    """A store that breaks mid-run (here: its database file removed) stops tracking, not the job."""
    db = tmp_path / "mlflow.db"
    config = TrackingConfig(tracking_uri=f"sqlite:///{db}", artifact_location=(tmp_path / "art").as_uri())
    with caplog.at_level(logging.WARNING, logger="videor4.pipeline.tracking"):
        with start_run("train", config) as run:
            assert run.active
            db.unlink()
            db.mkdir()  # a folder where the database was: every query now fails
            run.log_metrics({"loss": 1.0})
            run.log_metrics({"loss": 0.5})
    assert not run.active and run.metrics == {"loss": 0.5}
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# -- the stage side: a real git + DVC project ---------------------------------------------


DVC_YAML = {
    "stages": {
        "train": {
            "cmd": (
                "python -c \"open('out.txt', 'w').write('ok'); open('metrics/train.json', 'w').write('{}')\""
            ),
            "deps": ["input.txt", "inputs"],
            "params": ["seed", "rl.lr", "reward", {"extra.yaml": ["opt.depth"]}],
            "outs": ["out.txt"],
            "metrics": [{"metrics/train.json": {"cache": False}}],
        }
    }
}
PARAMS = {
    "seed": 3,
    "rl": {"lr": 0.01, "beta": 0.1},
    "reward": {"format": 0.5, "accuracy": {"weight": 1.0, "kind": "anls"}},
}


def _sh(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed git + DVC project whose stage has a file dep and a folder dep, reproduced once."""
    root = tmp_path_factory.mktemp("project")
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    (root / ".dvcignore").write_text("__pycache__/\n")
    (root / "input.txt").write_text("one\r\ntwo\n")  # CRLF: DVC 3 hashes raw bytes
    for rel, text in {
        "a.txt": "a",
        "sub/b.txt": "b",
        "sub/deeper/c.bin": "c",
        "__pycache__/x.pyc": "ignored",
    }.items():
        (root / "inputs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "inputs" / rel).write_text(text)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "extra.yaml").write_text(yaml.safe_dump({"opt": {"depth": 2, "unused": 1}}))
    (root / "metrics").mkdir()
    (root / "requirements.lock").write_text("six==1.16.0\n")
    _sh([sys.executable, "-m", "dvc", "repro", "-q"], root)
    _sh(GIT + ["add", "-A"], root)
    _sh(GIT + ["commit", "-q", "-m", "init"], root)
    return root


def test_dep_md5_matches_dvc_lock(project, monkeypatch) -> None:
    monkeypatch.chdir(project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    deps = {dep["path"]: dep for dep in lock["stages"]["train"]["deps"]}
    assert deps["inputs"]["nfiles"] == 3  # __pycache__ left out by .dvcignore
    recorded = {path: dep["md5"] for path, dep in deps.items()}
    assert recorded["inputs"].endswith(".dir")
    assert dep_md5("input.txt") == recorded["input.txt"]
    assert dep_md5("inputs") == recorded["inputs"]
    with pytest.raises(FileNotFoundError):
        dep_md5("absent")


def test_stage_definition_and_declared_params(project, monkeypatch) -> None:
    monkeypatch.chdir(project)
    definition = stage_definition("train")
    assert definition["deps"] == ["input.txt", "inputs"] and definition["plots"] == []
    assert declared_params("train", PARAMS) == {
        "seed": 3,
        "rl.lr": 0.01,
        "reward.format": 0.5,
        "reward.accuracy.weight": 1.0,
        "reward.accuracy.kind": "anls",
        "extra.yaml:opt.depth": 2,
    }
    with pytest.raises(KeyError, match="nope"):
        stage_definition("nope")


def test_lineage_tags(project, monkeypatch) -> None:
    monkeypatch.chdir(project)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    tags = lineage_tags("train")
    assert tags["git.commit"] == head and tags["git.dirty"] == "false"
    assert tags["dvc.stage"] == "train" and tags["videor4.version"]
    assert tags["dep.input.txt.md5"] == dep_md5("input.txt")
    assert tags["dep.inputs.md5"] == dep_md5("inputs")


def test_lineage_tags_outside_git_marks_unknown_and_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no enclosing repo
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "true", "deps": ["gone"]}}}))
    tags = lineage_tags("s")
    assert tags["git.commit"] == "unknown" and tags["dep.gone.md5"] == "missing"


def test_stage_run_and_write_metrics(project, store, monkeypatch) -> None:
    uri, artifacts = store
    work = project.parent / "stage-run"  # a copy, so the module's project stays clean
    subprocess.run(["cp", "-a", str(project), str(work)], check=True)
    monkeypatch.chdir(work)
    params = {**PARAMS, "tracking": {"uri": uri, "experiment": "stages", "artifact_location": artifacts}}
    metrics = {"kept": 10, "dropped": {"no_evidence": 3}, "note": "text", "ok": True}
    record = {"seconds": 2.5, "checkpoint": {"md5": "abc.dir", "size_mb": 1.5}}  # what it took: MLflow only
    with stage_run("train", params) as run:
        path = write_metrics(Path("metrics/train.json"), {**metrics, **record}, run)
    assert json.loads(path.read_text()) == metrics
    assert path.read_text() == json.dumps(metrics, indent=2, sort_keys=True) + "\n"

    got = client(uri).get_run(run.run_id)
    assert got.info.run_name == "train" and got.info.status == "FINISHED"
    assert got.data.metrics == {
        "kept": 10.0,
        "dropped.no_evidence": 3.0,
        "seconds": 2.5,
        "checkpoint.size_mb": 1.5,
    }
    assert got.data.params["reward.accuracy.kind"] == "anls"
    assert got.data.params["extra.yaml:opt.depth"] == "2"
    assert "tracking.uri" not in got.data.params
    assert got.data.tags["dep.inputs.md5"] == dep_md5("inputs")
    assert got.data.tags["dvc.stage"] == "train"
    # the environment is in the lineage: the lock file's md5 and the versions that decide training
    assert got.data.tags["env.lock.md5"] == hashlib.md5(b"six==1.16.0\n").hexdigest()
    assert [a.path for a in client(uri).list_artifacts(run.run_id, "environment")] == [
        "environment/requirements.lock"
    ]
    assert got.data.tags["env.trl"] == metadata.version("trl") and got.data.tags[
        "env.torch"
    ] == metadata.version("torch")


def test_experiments_open_as_model_training_and_keep_a_kind_set_by_hand(store) -> None:
    """MLflow 3 shows an experiment without `mlflow.experimentKind` in its GenAI view."""
    uri, artifacts = store
    with start_run("a", TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="kind-new")):
        pass
    assert (
        client(uri).get_experiment_by_name("kind-new").tags["mlflow.experimentKind"]
        == "custom_model_development"
    )
    old = client(uri).create_experiment(
        "kind-old", artifact_location=artifacts
    )  # made before the tag existed
    assert "mlflow.experimentKind" not in client(uri).get_experiment(old).tags
    with start_run("b", TrackingConfig(tracking_uri=uri, experiment="kind-old")):
        pass
    assert client(uri).get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    mine = client(uri).create_experiment(
        "kind-mine", artifact_location=artifacts, tags={"mlflow.experimentKind": "genai_development"}
    )
    with start_run("c", TrackingConfig(tracking_uri=uri, experiment="kind-mine")):
        pass
    assert client(uri).get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"


def test_stage_logs_its_data_deps_and_outs_as_datasets(store, tmp_path, monkeypatch) -> None:
    """Deps and outs under data/ are MLflow dataset inputs ("input" / "output"), digest = DVC's md5."""
    uri, artifacts = store
    root = tmp_path / "ds"
    root.mkdir()
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/a.txt").write_text("a")
    (root / "data/raw/b.txt").write_text("b")
    (root / "notes.txt").write_text("not a dataset")
    stage = {"cmd": "true", "deps": ["data/raw", "notes.txt"], "outs": ["data/built/rows.jsonl"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"build": stage}}))
    monkeypatch.chdir(root)
    params = {"tracking": {"uri": uri, "experiment": "datasets", "artifact_location": artifacts}}
    with stage_run("build", params) as run:
        (root / "data/built").mkdir()
        (root / "data/built/rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n\n{"a": 3}\n')
    inputs = client(uri).get_run(run.run_id).inputs.dataset_inputs
    got = {(i.dataset.name, i.tags[0].value): i.dataset for i in inputs}
    assert set(got) == {("data/raw", "input"), ("data/built/rows.jsonl", "output")}
    assert got["data/raw", "input"].digest == dep_md5("data/raw") and got[
        "data/raw", "input"
    ].digest.endswith(".dir")
    assert json.loads(got["data/raw", "input"].profile) == {"files": 2}
    assert got["data/built/rows.jsonl", "output"].digest == dep_md5("data/built/rows.jsonl")
    assert json.loads(got["data/built/rows.jsonl", "output"].profile) == {"rows": 3}
    assert json.loads(got["data/raw", "input"].source) == {"uri": (root / "data/raw").as_uri()}


def test_tracking_config_from_params() -> None:
    assert tracking_config({}) == TrackingConfig()
    assert tracking_config({"tracking": {"strict": True}}) == TrackingConfig(strict=True)
    assert tracking_config({"tracking": {"uri": "http://h:5000", "experiment": "x"}}) == TrackingConfig(
        tracking_uri="http://h:5000", experiment="x"
    )
    with pytest.raises(ValueError, match="urI"):
        tracking_config({"tracking": {"urI": "typo"}})


def test_eval_stage_tags_each_checkpoint_with_its_lineage_md5_hashed_once(
    store, tmp_path, monkeypatch
) -> None:
    """A checkpoint (multi-GB at paper scale) is hashed once per eval: by the lineage tags."""
    import contextlib
    import importlib.util
    from collections import Counter

    from videor4.pipeline import lineage

    uri, artifacts = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no enclosing repo
    names = ["base", "rl_c"]
    for name in names:
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.safetensors").write_bytes(name.encode() * 1000)
    (tmp_path / "held_out.jsonl").write_text(json.dumps({"sample_id": "s1"}) + "\n")
    deps = ["held_out.jsonl", *(f"models/{name}" for name in names)]
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"eval": {"cmd": "python stages/eval.py", "deps": deps}}})
    )
    tracking = {"uri": uri, "experiment": "eval-lineage", "artifact_location": artifacts}
    (tmp_path / "params.yaml").write_text(
        # in this process torch is loaded already: it may only ask for the kernels it runs with
        yaml.safe_dump(
            {"eval": {"checkpoints": names}, "tracking": tracking, "runtime": {"cpu_kernels": "native"}}
        )
    )

    hashed: Counter = Counter()
    real_builder = lineage._md5_builder

    def counting_builder(root):
        md5 = real_builder(root)

        def counted(path):
            hashed[Path(path).resolve()] += 1
            return md5(path)

        return counted

    monkeypatch.setattr(lineage, "_md5_builder", counting_builder)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # the lineage is written before the first checkpoint is evaluated
        raise Stop

    monkeypatch.setattr("videor4.evaluation.evaluate.evaluate_checkpoint", stop)
    spec = importlib.util.spec_from_file_location("eval_stage", ROOT / "stages" / "eval.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    runs = []
    real_stage_run = stage.stage_run

    @contextlib.contextmanager
    def keep_run(*args, **kwargs):
        with real_stage_run(*args, **kwargs) as run:
            runs.append(run)
            yield run

    monkeypatch.setattr(stage, "stage_run", keep_run)
    outputs = [
        "--predictions",
        "p",
        "--table",
        "t.md",
        "--headline",
        "h.json",
        "--metrics",
        "m.json",
        "--scaling",
        "s.json",
        "--accuracy",
        "a.json",
    ]
    monkeypatch.setattr(
        sys, "argv", ["eval.py", "--models", "models", "--held-out", "held_out.jsonl", *outputs]
    )
    with pytest.raises(Stop):
        stage.main()

    tags = runs[0].tags
    for name in names:
        assert hashed[(tmp_path / "models" / name).resolve()] == 1
        assert tags[f"checkpoint.{name}.md5"] == tags[f"dep.models/{name}.md5"]
        assert tags[f"checkpoint.{name}.md5"].endswith(".dir")
    assert client(uri).get_run(runs[0].run_id).data.tags["checkpoint.base.md5"] == tags["dep.models/base.md5"]


def test_pipeline_key_is_the_same_for_every_stage_of_one_dvc_process(tmp_path) -> None:
    """Stages find their pipeline run by the key of the `dvc` process above them: two children of one
    such process must agree, and it must not move with the wall clock (it comes from /proc's ticks)."""
    import psutil

    from videor4.pipeline.runner import process_start_stamp

    fake_dvc = tmp_path / "dvc"  # an ancestor whose command line looks like `dvc exp run`
    fake_dvc.write_text(
        "import subprocess, sys\n"
        "probe = 'from videor4.pipeline.runner import dvc_invocation; print(dvc_invocation()[0])'\n"
        "for _ in range(2):\n"
        "    subprocess.run([sys.executable, '-c', probe], check=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(fake_dvc), "exp", "run"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    keys = done.stdout.split()
    assert len(keys) == 2 and keys[0] == keys[1], keys
    me = psutil.Process()
    assert process_start_stamp(me) == process_start_stamp(me) and str(me.pid) in process_start_stamp(me)


def test_user_info_in_a_uri_is_never_logged_tagged_or_printed(store, caplog) -> None:
    """A token in tracking.uri / storage.endpoint_url (user:token@host) reaches neither the MLflow
    store (params, tags: the `dvc exp run -S ...` command line is a tag) nor a message."""
    from videor4.pipeline.storage import S3Settings, StorageError, check

    uri, artifacts = store
    secret = "s3cr3t-t0ken"
    params = {
        "tracking": {"uri": f"http://user:{secret}@127.0.0.1:5000"},
        "seed": 0,
        "storage": {"endpoint_url": f"https://key:{secret}@s3.example.com"},
    }
    tags = {"dvc.command": f"dvc exp run -S tracking.uri=http://user:{secret}@127.0.0.1:5000"}
    config = TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="secrets", strict=True)
    with start_run("stage", config, params=params, tags=tags) as run:
        pass
    logged = client(uri).get_run(run.run_id).data
    assert logged.params["tracking.uri"] == "http://127.0.0.1:5000"
    assert logged.params["storage.endpoint_url"] == "https://s3.example.com"
    assert logged.tags["dvc.command"] == "dvc exp run -S tracking.uri=http://127.0.0.1:5000"
    assert secret not in json.dumps([logged.params, logged.tags, run.params, run.tags])

    down = f"127.0.0.1:{free_port()}"  # nothing listens: the failure names the server, not the token
    with caplog.at_level(logging.WARNING, logger="videor4.pipeline.tracking"):
        with start_run("quiet", TrackingConfig(tracking_uri=f"http://user:{secret}@{down}")):
            pass
    with pytest.raises(RuntimeError) as failed:
        with start_run("strict", TrackingConfig(tracking_uri=f"http://user:{secret}@{down}", strict=True)):
            pass
    with pytest.raises(StorageError) as unreachable:
        check(S3Settings(bucket="b", endpoint_url=f"http://key:{secret}@{down}", region="us-east-1"))
    for message in (caplog.text, str(failed.value), str(unreachable.value)):
        assert f"http://{down}" in message and secret not in message, message
