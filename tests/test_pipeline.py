"""The DVC pipeline end to end on a tiny embedded default: real `dvc repro`,
MLflow lineage, a no-op second repro, and recovery from SIGKILL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from conftest import TINY_SPEC, file_bytes

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


STAGES = {
    "make_videos",
    "world_check",
    "build_data",
    "base_model",
    "pretrain",
    "direct_sft",
    "drp_sft",
    "rl_d",
    "crp_sft",
    "rl_c",
    "eval",
    "figures",
}


def _stage_cmd(path: Path, stage: str, **options: str) -> list[str]:
    """The stage's command line exactly as dvc.yaml declares it (its one source), with the
    `${...}` params filled in and any `--<option> value` replaced."""
    params = yaml.safe_load((path / "params.yaml").read_text())
    cmd = yaml.safe_load((path / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    cmd = re.sub(r"\$\{([\w.]+)\}", lambda m: str(_dotted(params, m.group(1))), cmd)
    words = cmd.split()
    for name, value in options.items():
        words[words.index(f"--{name.replace('_', '-')}") + 1] = value
    assert words[0] == "python"
    return [sys.executable, *words[1:]]


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


CHECKPOINTS = ["base", "pretrain", "direct_sft", "drp_sft", "rl_d", "crp_sft", "rl_c"]


def _find(tree, match):
    """The first dict in a JSON tree that `match`es (depth first)."""
    if isinstance(tree, dict):
        if match(tree):
            return tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, match)
            if found is not None:
                return found
    return None


def _mlflow_runs(path: Path, pipelines: bool = False):
    """The project's MLflow client and its stage runs by name (the first pipeline's, unless
    re-run later), or with `pipelines` its pipeline runs, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("video-r4")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    if pipelines:
        return client, [r for r in runs if r.data.tags.get("videor4.role") == "pipeline"]
    return client, {
        r.info.run_name: r for r in reversed(runs) if r.data.tags.get("videor4.role") != "pipeline"
    }


def _run_tree(client, experiment_id: str) -> str:
    """Every run as `name id parent pipeline-key`: what a failed lineage assertion needs to show."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    return (
        "\n".join(
            f"{r.info.run_name} {r.info.run_id} parent={r.data.tags.get('mlflow.parentRunId')} "
            f"key={r.data.tags.get('videor4.pipeline')} exp={r.data.tags.get('dvc.exp_name')}"
            for r in runs
        )
        + "\n"
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    """A git clone-like copy of the tracked project with tiny params."""
    dst = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("metrics/", "dvc.lock")) or not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["synthetic"].update(n_videos=4, num_frames=24, questions_per_video=3, test_fraction=0.25)
    params["data"]["ocr"]["max_videos"] = 1
    params["data"]["sizes"] = {"drp": 8, "crp": 8, "rl_d": 4, "rl_c": 4}
    params["data"]["tokenizer_corpus"] = {"drp": 8, "crp": 8}
    params["model"]["tiny"].update(TINY_SPEC)
    params["pretrain"].update(tiny_steps=4, batch_size=4, held_out=4, logging_steps=1, save_steps=2)
    params["sft"].update(batch_size=2, save_steps=4, format_eval_prompts=3, format_eval_max_new_tokens=24)
    params["sft"]["drp"] = {
        "learning_rate": 0.003,
        "epochs": 10,
    }  # ~40 steps: long enough to be killed mid-run
    params["sft"]["crp"] = {"learning_rate": 0.003, "epochs": 1}
    params["sft"]["direct"] = {**params["sft"]["drp"], "target": "direct"}  # DRP-SFT's budget, as params.yaml
    params["rl"].update(
        group_size=2,
        prompts_per_step=2,
        micro_batch_size=2,
        max_new_tokens=24,
        rollout_batch_size=8,
        eval_prompts=2,
        eval_group_size=2,
        save_steps=2,
        learning_rate=0.001,
        sample_trajectories=2,
    )
    params["rl"]["rl_d"] = {"steps": 4}
    params["rl"]["rl_c"] = {"steps": 2}
    params["eval"].update(max_steps=2, max_new_tokens=24, batch_size=8)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        DVC_NO_ANALYTICS="1",
        GX_ANALYTICS_ENABLED="false",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True)
    return dst, env


@pytest.fixture(scope="module")
def reproduced(repo):
    path, env = repo
    t0 = time.perf_counter()
    result = _run(["dvc", "repro"], path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    (path.parent / "repro.log").write_text(result.stdout + result.stderr)
    return path, env, time.perf_counter() - t0


# a warning line as Python's warnings module, the logging module or DeepSpeed's logger prints it
WARNING_LINE = re.compile(r"\b\w*Warning\b:|\bWARNING\b")


def test_a_pipeline_run_prints_no_warning(reproduced):
    """Our code raises none; the ones only upstream can fix are filtered at the stage runner
    (videor4.pipeline.runner.quiet_upstream_warnings)."""
    path, _, _ = reproduced
    log = (path.parent / "repro.log").read_text()
    assert "Running stage 'pretrain'" in log and "Running stage 'rl_c'" in log  # the whole run's output
    lines = log.replace("\r", "\n").splitlines()
    warned = sorted({line.strip() for line in lines if WARNING_LINE.search(line)})
    assert not warned, "\n".join(warned)


def test_repro_builds_validated_data_and_metrics(reproduced):
    path, _, _ = reproduced
    m = json.loads((path / "metrics/build_data.json").read_text())
    for key in ("n_videos", "n_drp", "n_crp", "n_rl_d", "n_rl_c", "dropped", "ocr_gt_agreement"):
        assert key in m
    assert "seconds" not in m  # timings go to MLflow, not into what `dvc exp show` compares
    assert m["n_videos"] == 4 and m["n_drp"] > 0 and m["n_crp"] > 0
    assert m["ocr_gt_agreement"] is not None and m["ocr_gt_agreement"] > 0.5
    for name in ("samples_train", "samples_test", "sft_drp", "sft_crp", "rl_d", "rl_c"):
        assert (path / "data/built" / f"{name}.jsonl").stat().st_size > 0


def test_mlflow_runs_carry_dvc_lineage(reproduced):
    path, _, _ = reproduced
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    client, runs = _mlflow_runs(path)
    assert set(runs) == STAGES
    # one `dvc repro` is one pipeline run: every stage is its child, it logs every param and eval's table
    _, pipelines = _mlflow_runs(path, pipelines=True)
    pipeline = pipelines[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {pipeline.info.run_id}
    assert pipeline.info.status == "FINISHED" and pipeline.info.run_name.startswith("pipeline workspace ")
    assert pipeline.data.tags["dvc.command"] == "dvc repro"
    assert pipeline.data.params["reward.lambda_cur"] == "1.0" and pipeline.data.params["rl.rl_d.steps"] == "4"
    assert "synthetic.rl_c.rumination.acc" in pipeline.data.metrics
    assert "eval_table.md" in [a.path for a in client.list_artifacts(pipeline.info.run_id)]
    run = runs["build_data"]
    assert run.info.status == "FINISHED"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True
    ).stdout.strip()
    assert run.data.tags["git.commit"] == head and run.data.tags["dvc.stage"] == "build_data"
    for dep in lock["stages"]["build_data"]["deps"]:
        assert run.data.tags[f"dep.{dep['path']}.md5"] == dep["md5"], dep["path"]
    assert run.data.params["data.sizes.drp"] == "8"
    assert (
        run.data.metrics["n_drp"] > 0
        and "ocr_gt_agreement" in run.data.metrics
        and run.data.metrics["seconds"] > 0
    )
    # the UI opens on the runs table (model training), and the Dataset column shows the data lineage
    assert (
        client.get_experiment_by_name("video-r4").tags["mlflow.experimentKind"] == "custom_model_development"
    )
    datasets = {(i.dataset.name, i.tags[0].value): i.dataset.digest for i in run.inputs.dataset_inputs}
    outs = {o["path"]: o["md5"] for o in lock["stages"]["build_data"]["outs"]}
    assert datasets == {
        ("data/synthetic", "input"): outs_of(lock, "make_videos")["data/synthetic"],
        ("data/built", "output"): outs["data/built"],
    }
    drp = {(i.dataset.name, i.tags[0].value): i.dataset.digest for i in runs["drp_sft"].inputs.dataset_inputs}
    assert drp == {("data/built", "input"): outs["data/built"]}


def outs_of(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


def _latest_run(path: Path, stage: str):
    client, _ = _mlflow_runs(path)
    exp = client.get_experiment_by_name("video-r4")
    return client.search_runs(
        [exp.experiment_id], f"attributes.run_name = '{stage}'", order_by=["attributes.start_time DESC"]
    )[0]


def test_second_repro_does_nothing(reproduced):
    path, env, _ = reproduced
    t0 = time.perf_counter()
    result = _run(["dvc", "repro"], path, env)
    assert result.returncode == 0
    assert "didn't change, skipping" in result.stdout and "Running stage" not in result.stdout
    assert time.perf_counter() - t0 < 30


def _cached_outputs(path: Path) -> dict[str, bytes]:
    """Every file of every output DVC caches (the ones a remote stores), by path."""
    stages = yaml.safe_load((path / "dvc.yaml").read_text())["stages"]
    outs = [
        o
        for stage in stages.values()
        for o in stage.get("outs", [])
        if isinstance(o, str) or next(iter(o.values())).get("cache", True)
    ]
    files = {}
    for out in (o if isinstance(o, str) else next(iter(o)) for o in outs):
        root = path / out
        if root.is_file():
            files[out] = root.read_bytes()
        else:
            files.update({f"{out}/{name}": data for name, data in file_bytes(root).items()})
    return files


def test_push_to_s3_then_pull_into_a_fresh_clone_restores_outputs(reproduced, s3_server, tmp_path):
    """The DVC remote on a real S3-compatible server: failed pushes name what failed and change
    nothing; a push, then a pull into a fresh clone, restores every output byte for byte."""
    from conftest import free_port

    path, env, _ = reproduced
    s3env = s3_server.env(base=env, VIDEOR4_S3_PREFIX="pipeline")
    done = _run([str(Path(sys.executable).parent / "video-r4"), "remote", "configure"], path, s3env)
    assert done.returncode == 0, done.stderr
    config = (path / ".dvc/config").read_text()
    assert (
        "url = s3://videor4-tests/pipeline/dvc" in config and f"endpointurl = {s3_server.endpoint}" in config
    )
    assert (
        s3_server.secret_key not in config and s3_server.access_key not in config
    )  # credentials stay in the environment

    before = _cached_outputs(path)
    assert any(k.startswith("models/rl_c/") for k in before) and any(
        k.startswith("data/built/") for k in before
    )
    failures = {
        "unreachable": (
            {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
            "S3 endpoint http://127.0.0.1:",
        ),
        "no bucket": ({"VIDEOR4_S3_BUCKET": "no-such-bucket"}, "S3 bucket 'no-such-bucket' does not exist"),
        "bad secret": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "S3 credentials were rejected"),
    }
    for case, (override, message) in failures.items():
        done = _run(
            [str(Path(sys.executable).parent / "video-r4"), "remote", "push"], path, {**s3env, **override}
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (case, done.stderr)
        assert lines[0].startswith(f"error: push: {message}") and "nothing was transferred" in lines[0], (
            case,
            lines,
        )
    # DVC's own push, without the check, fails on the bad key too
    assert _run(["dvc", "push"], path, {**s3env, "AWS_SECRET_ACCESS_KEY": "wrong"}).returncode != 0
    assert _cached_outputs(path) == before
    status = _run(["dvc", "status"], path, env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    s3 = s3_server.client()
    assert s3.list_objects_v2(Bucket=s3_server.bucket, Prefix="pipeline/").get("KeyCount") == 0

    done = _run([str(Path(sys.executable).parent / "video-r4"), "remote", "push"], path, s3env)
    assert done.returncode == 0, done.stderr
    assert (
        s3.list_objects_v2(Bucket=s3_server.bucket, Prefix="pipeline/dvc/files/md5/").get("KeyCount", 0) > 0
    )

    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "outputs on the S3 remote"]):
        subprocess.run(cmd, cwd=path, env=env, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(path), str(clone)], env=env, check=True)
    assert not (clone / "models").exists()
    done = _run([str(Path(sys.executable).parent / "video-r4"), "remote", "pull"], clone, s3env)
    assert done.returncode == 0, done.stderr
    assert _cached_outputs(clone) == before
    status = _run(["dvc", "status"], clone, env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def test_sigkill_during_build_then_repro_gives_identical_outputs(reproduced):
    path, env, _ = reproduced
    built = path / "data/built"
    reference = {p.relative_to(built): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    proc = subprocess.Popen(  # forced: same params, so an uninterrupted run would reproduce `reference`
        ["dvc", "repro", "-f", "build_data"],
        cwd=path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # wait until the build has started writing its temporary folder, then kill everything
    deadline = time.time() + 120
    while time.time() < deadline and not list((path / "data").glob(".built.building-*")):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing half-written is visible where the data is read from
    assert not built.exists() or {p.name for p in built.glob("*.jsonl")} == {
        f.name for f in reference if f.suffix == ".jsonl"
    }
    result = _run(["dvc", "repro"], path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    again = {p.relative_to(built): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    assert again == reference
    # a killed build can leave only its hidden temporary folder; the next build removes it
    assert all(
        p.name.startswith(".built.building-") for p in (path / "data").iterdir() if p.name.startswith(".")
    )


def test_sft_stages_write_metrics_loss_curves_and_tracked_checkpoints(reproduced):
    from videor4.policy.model import load_policy

    path, env, _ = reproduced
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    client, runs = _mlflow_runs(path)
    for stage in ("direct_sft", "drp_sft", "crp_sft"):
        m = json.loads((path / f"metrics/{stage}.json").read_text())
        # drp_sft and direct_sft train ~40 steps, their loss must fall; crp_sft's 4 steps (one epoch) may not
        assert (
            m["train_loss_last"] < m["train_loss_first"]
            if stage != "crp_sft"
            else math.isfinite(m["train_loss_last"])
        )
        assert 0.0 <= m["format_valid_rate"] <= 1.0 and m["format_eval_prompts"] == 3
        assert m["skipped_total"] == 0 and "seconds" not in m and "checkpoint" not in m
        curve = json.loads((path / f"metrics/{stage}_loss.json").read_text())
        assert len(curve) == m["steps"] and {"step", "loss", "learning_rate", "grad_norm"} <= set(curve[0])
        load_policy(path / "models" / stage)
        run = runs[stage]
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "train/learning_rate", "train/grad_norm"):
            assert len(client.get_metric_history(run.info.run_id, key)) == m["steps"], key
        out = next(o for o in lock["stages"][stage]["outs"] if o["path"] == f"models/{stage}")
        assert run.data.tags["checkpoint.md5"] == out["md5"]  # the DVC-tracked checkpoint, by content
        assert run.data.metrics["seconds"] > 0
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [
            f"{stage}_generations.json",
            "environment",
        ]
        # the checkpoint is the run's MLflow model and a version of video-r4-<stage>,
        # tagged with its md5 and commit
        (version,) = client.search_model_versions(f"name = 'video-r4-{stage}'")
        assert version.run_id == run.info.run_id and version.tags["dvc.md5"] == out["md5"]
        assert (
            version.tags["git.commit"] == run.data.tags["git.commit"] and version.tags["dvc.stage"] == stage
        )
        assert run.data.tags["model.registered_uri"] == f"models:/video-r4-{stage}/{version.version}"
        # the environment that trained it: the lock file, and its md5 and the key versions as tags
        assert [a.path for a in client.list_artifacts(run.info.run_id, "environment")] == [
            "environment/requirements.lock"
        ]
        assert (
            run.data.tags["env.lock.md5"]
            == hashlib.md5((path / "requirements.lock").read_bytes()).hexdigest()
        )
        assert run.data.tags["env.trl"] == metadata.version("trl")
    # the curriculum order: DRP-SFT → RL_d → CRP-SFT → RL_c
    assert runs["crp_sft"].data.tags["init"] == "models/rl_d"
    plots = _run(["dvc", "plots", "show", "--json"], path, env)
    assert plots.returncode == 0 and "drp_sft_loss.json" in plots.stdout


def test_rl_stages_write_metrics_curves_transcripts_and_trained_checkpoints(reproduced):
    path, env, _ = reproduced
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    client, runs = _mlflow_runs(path)
    md5 = {
        stage: next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == f"models/{stage}")
        for stage in lock["stages"]
        if stage.endswith(("sft", "rl_d", "rl_c"))
    }
    for stage, init, steps in (("rl_d", "drp_sft", 4), ("rl_c", "crp_sft", 2)):
        m = json.loads((path / f"metrics/{stage}.json").read_text())
        for key in (
            "reward_start",
            "reward_end",
            "accuracy_start",
            "accuracy_end",
            "kl_last",
            "clip_calls_per_rollout",
            "crop_calls_per_rollout",
            "invalid_call_rate",
        ):
            assert isinstance(m[key], float), key
        assert m["steps"] == steps and m["held_out"]["prompts"] == 2
        # an update needs a group whose rewards differ: equal-reward groups give no gradient
        groups = (
            m["steps"] // 2 * 2
        )  # a batch of prompts_per_step (2) groups every updates_per_batch (2) steps
        assert (md5[stage] != md5[init]) == (m["zero_variance_groups"] < groups), m
        run = runs[stage]
        assert run.info.status == "FINISHED" and run.data.tags["init"] == f"models/{init}"
        assert run.data.tags["checkpoint.md5"] == md5[stage]
        for key in (
            "train/reward",
            "train/rewards/accuracy",
            "train/rewards/format",
            "train/tools/clip_calls_per_rollout",
            "train/tools/invalid_call_rate",
            "train/rumination_steps",
            "train/response_length",
        ):
            assert client.get_metric_history(run.info.run_id, key), key
        assert len(client.get_metric_history(run.info.run_id, "train/kl")) == steps
        transcripts = [a.path for a in client.list_artifacts(run.info.run_id, "rollouts")]
        assert "rollouts/held_out_before.md" in transcripts and "rollouts/held_out_after.md" in transcripts
        assert any(p.startswith("rollouts/step_") for p in transcripts)
        curve = json.loads((path / f"metrics/{stage}_curve.json").read_text())
        assert curve and {"step", "reward", "kl"} <= set(curve[-1])


def test_eval_scores_every_checkpoint_in_both_modes_with_lineage(reproduced):
    path, env, _ = reproduced
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    m = json.loads((path / "metrics/eval.json").read_text())
    n = m["questions"]["synthetic"]
    assert n == len((path / "data/built/samples_test.jsonl").read_text().splitlines()) and m["max_steps"] == 2
    for name in CHECKPOINTS:
        for mode in ("single_pass", "rumination"):
            scores = m["synthetic"][name][mode]
            assert 0.0 <= scores["acc"] <= 1.0 and 0.0 <= scores["anls"] <= 1.0, scores
        assert set(m["synthetic"][name]["tools"]) == {
            "clip_per_question",
            "crop_per_question",
            "questions_using_tools",
            "invalid_call_rate",
            "answered",
        }
        single = [
            json.loads(x)
            for x in (path / f"reports/eval/{name}.synthetic.single_pass.jsonl").read_text().splitlines()
        ]
        rumination = [
            json.loads(x)
            for x in (path / f"reports/eval/{name}.synthetic.rumination.jsonl").read_text().splitlines()
        ]
        assert len(single) == len(rumination) == n
        assert all(r["calls"] == 0 for r in single)  # single pass: no tool was ever called
        assert all(r["calls"] <= 2 and len(r["trajectory"]["steps"]) == r["calls"] for r in rumination)
        # the reported numbers are the means of the per-question scores
        assert m["synthetic"][name]["rumination"]["anls"] == pytest.approx(
            sum(r["anls"] for r in rumination) / n
        )
    scaling = json.loads((path / "metrics/eval_scaling.json").read_text())
    assert [p["steps"] for p in scaling] == [0, 1, 2] and set(scaling[0]) == {"steps", *CHECKPOINTS}
    for name in CHECKPOINTS:  # the curve's ends are the two modes
        assert scaling[0][name] == m["synthetic"][name]["single_pass"]["acc"]
        assert scaling[-1][name] == m["synthetic"][name]["rumination"]["acc"]
    table = (path / "reports/eval_table.md").read_text()
    assert (
        f"| Checkpoint | Mode | Synthetic Acc (n={n}) | Synthetic ANLS (n={n}) |" in table
        and "## Paired comparisons" in table
    )
    pairs = m["comparisons"][
        "synthetic"
    ]  # the curriculum's pairs, CRP-SFT against curriculum.crp_sft_init (models/rl_d)
    assert set(pairs["stage_vs_init"]) == {
        "pretrain_vs_base",
        "direct_sft_vs_pretrain",
        "drp_sft_vs_pretrain",
        "rl_d_vs_drp_sft",
        "crp_sft_vs_rl_d",
        "rl_c_vs_crp_sft",
    }
    assert set(pairs["rumination_vs_single_pass"]) == set(CHECKPOINTS)
    # the headline: rumination at the best rumination-trained checkpoint against the single pass that was
    # trained to answer
    headline_pair = pairs["rumination_best_vs_direct_single_pass"]
    assert headline_pair["best"] in {"drp_sft", "rl_d", "crp_sft", "rl_c"}
    assert {"diff", "ci", "p", "n"} <= set(headline_pair["acc"]) and headline_pair["acc"]["n"] == n
    assert "chance_multiple_choice" in m and "(best) - direct_sft" in table and "· ans " in table
    for name in CHECKPOINTS:
        assert {"multiple_choice", "open"} >= set(m["synthetic"][name]["by_format"]) and m["synthetic"][name][
            "by_format"
        ]
        for mode in ("single_pass", "rumination"):
            assert 0.0 <= m["synthetic"][name][mode]["answered"] <= 1.0
    main_table = table.split("\n## ")[
        0
    ]  # the paper-style table, before the scaling, per-kind and paired sections
    assert (
        sum(
            line.startswith(("| rl_c | single-pass", "| rl_c | rumination"))
            for line in main_table.splitlines()
        )
        == 2
    )
    # lineage: each checkpoint's md5 as DVC locked it, and the run that trained it
    client, runs = _mlflow_runs(path)
    run = runs["eval"]
    for name in CHECKPOINTS:
        dep = next(d for d in lock["stages"]["eval"]["deps"] if d["path"] == f"models/{name}")
        assert run.data.tags[f"checkpoint.{name}.md5"] == dep["md5"]
    assert run.data.tags["checkpoint.rl_c.run_id"] == runs["rl_c"].info.run_id
    assert len(client.get_metric_history(run.info.run_id, "scaling/synthetic/rl_c/acc")) == 3
    plots = _run(["dvc", "plots", "show", "--json"], path, env)
    titles = json.loads(plots.stdout)["data"] if plots.returncode == 0 else {}
    assert any(t.startswith("Test-time scaling") for t in titles), plots.stdout[-2000:]
    assert any(t.startswith("Accuracy per checkpoint") for t in titles), plots.stdout[-2000:]
    # the headline metrics: Acc / ANLS per checkpoint and mode, the full metrics' numbers
    headline = json.loads((path / "metrics/headline.json").read_text())
    assert set(headline["synthetic"]) == set(CHECKPOINTS)
    assert headline["rumination_best_vs_direct_single_pass"]["synthetic"] == headline_pair
    for name in CHECKPOINTS:
        for mode in ("single_pass", "rumination"):
            assert headline["synthetic"][name][mode] == {
                k: m["synthetic"][name][mode][k] for k in ("acc", "anls")
            }
    # `dvc exp show` leads with them: its first metric columns, before any stage's
    shown = _run(["dvc", "exp", "show", "--csv", "--no-pager"], path, env)
    columns = shown.stdout.splitlines()[0].split(",")
    first = columns[columns.index("parent") + 1 :][:24]
    leading = ("metrics/headline.json:", "rumination_best_vs_direct_single_pass.", "synthetic.")
    assert all(c.startswith(leading) for c in first), first[:6]
    assert not any(c.endswith("seconds") for c in columns), [c for c in columns if c.endswith("seconds")]


def test_figures_stage_draws_pngs_logs_them_and_the_table_links_them(reproduced):
    path, _, _ = reproduced
    from videor4.evaluation.figures import FIGURES

    figures = path / "reports/figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        data = (figures / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (
            name
        )  # a real picture, not an empty canvas
    table = (path / "reports/eval_table.md").read_text()
    assert all(f"(figures/{name})" in table for name in FIGURES)
    client, runs = _mlflow_runs(path)
    logged = [a.path for a in client.list_artifacts(runs["figures"].info.run_id, "figures")]
    assert logged == sorted(f"figures/{name}" for name in FIGURES)


def test_eval_and_ask_take_a_registered_model_from_the_command_line(reproduced, tmp_path):
    """`video-r4 eval` scores one checkpoint on one set with the stage's engine; `models:/` and
    `runs:/` name the same checkpoint as its folder; bad input is one line."""
    path, env, _ = reproduced
    cli = [str(Path(sys.executable).parent / "video-r4")]
    client, runs = _mlflow_runs(path)
    common = ["--set", "synthetic", "--root", "data/built", "--max-questions", "3", "--max-steps", "1"]
    by_path = _run(
        [*cli, "eval", "--model", "models/rl_c", *common, "--predictions", str(tmp_path / "a.jsonl")],
        path,
        env,
    )
    assert by_path.returncode == 0, by_path.stderr
    assert "| rl_c | rumination |" in by_path.stdout and "Synthetic Acc (n=3)" in by_path.stdout
    registered = _run(
        [
            *cli,
            "eval",
            "--model",
            "models:/video-r4-rl_c/1",
            *common,
            "--predictions",
            str(tmp_path / "b.jsonl"),
        ],
        path,
        env,
    )
    assert registered.returncode == 0, registered.stderr
    a, b = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("a.jsonl", "b.jsonl"))
    assert len(a) == 6 and {r["mode"] for r in a} == {"single_pass", "rumination"}
    assert [r["prediction"] for r in a] == [
        r["prediction"] for r in b
    ]  # the same checkpoint, fetched from MLflow
    one = _run(
        [
            *cli,
            "eval",
            "--model",
            f"runs:/{runs['rl_c'].info.run_id}/model",
            *common,
            "--mode",
            "single_pass",
        ],
        path,
        env,
    )
    assert one.returncode == 0 and "single-pass" in one.stdout and "| Synthetic | 3 |" in one.stdout, (
        one.stdout + one.stderr
    )
    video = sorted((path / "data/synthetic/videos").glob("*.mp4"))[0]
    asked = _run(
        [
            *cli,
            "ask",
            str(video),
            "What does the red sign say?",
            "--model",
            "models:/video-r4-drp_sft/1",
            "--max-steps",
            "1",
            "--report",
            str(tmp_path / "r.html"),
        ],
        path,
        env,
    )
    assert asked.returncode == 0 and "answer:" in asked.stdout, asked.stderr
    for args, message in (
        (
            ["--model", "models:/video-r4-nope/1", *common],
            "error: cannot fetch models:/video-r4-nope/1 from sqlite:",
        ),
        (
            ["--model", "models/rl_c", "--set", "nope", "--root", "data/built"],
            "error: unknown eval set 'nope'",
        ),
        (
            ["--model", "models/rl_c", "--set", "mpdocvqa", "--root", str(tmp_path / "absent")],
            "error: mpdocvqa root not found: ",
        ),
        (["--model", "models/absent", *common], "error: model not found: models/absent"),
    ):
        bad = _run([*cli, "eval", *args], path, env)
        assert (
            bad.returncode == 1
            and bad.stderr.strip().startswith(message)
            and len(bad.stderr.strip().splitlines()) == 1
        ), bad.stderr


def test_reward_ablation_reruns_only_the_stages_it_affects(reproduced):
    path, env, _ = reproduced
    result = _run(["dvc", "exp", "run", "-n", "no-curiosity", "-S", "reward.lambda_cur=0.0"], path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    # the stages that read `reward`; crp_sft between them and eval after them
    # re-run only if a checkpoint changed
    assert {"rl_d", "rl_c"} <= ran <= {"rl_d", "crp_sft", "rl_c", "eval", "figures"}, result.stdout
    shown = _run(["dvc", "exp", "show", "--json"], path, env)
    assert shown.returncode == 0 and "no-curiosity" in shown.stdout and "reward_end" in shown.stdout
    experiment = _find(json.loads(shown.stdout), lambda d: d.get("name") == "no-curiosity")
    eval_metrics = _find(experiment, lambda d: "metrics/eval.json" in d)["metrics/eval.json"]["data"]
    assert 0.0 <= eval_metrics["synthetic"]["rl_c"]["rumination"]["acc"] <= 1.0  # eval metrics side by side
    # the experiment is a pipeline run of its own, named after it
    _, pipelines = _mlflow_runs(path, pipelines=True)
    assert (
        pipelines[-1].data.tags["dvc.exp_name"] == "no-curiosity"
        and pipelines[-1].data.params["reward.lambda_cur"] == "0.0"
    )
    assert pipelines[-1].info.status == "FINISHED"
    assert pipelines[-1].info.run_name.startswith("pipeline no-curiosity ")


def test_schedule_ablation_starts_crp_sft_from_the_chosen_checkpoint(reproduced):
    path, env, _ = reproduced
    result = _run(
        ["dvc", "exp", "run", "-n", "crp-only", "-S", "curriculum.crp_sft_init=models/base"], path, env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"crp_sft", "rl_c", "eval", "figures"}, result.stdout
    client, _ = _mlflow_runs(path)
    _, pipelines = _mlflow_runs(path, pipelines=True)
    children = client.search_runs(
        [pipelines[-1].info.experiment_id], f"tags.`mlflow.parentRunId` = '{pipelines[-1].info.run_id}'"
    )
    crp = next((r for r in children if r.info.run_name == "crp_sft"), None)
    assert crp is not None, _run_tree(client, pipelines[-1].info.experiment_id) + result.stdout[-3000:]
    assert (
        crp.data.tags["init"] == "models/base" and crp.data.params["curriculum.crp_sft_init"] == "models/base"
    )


def test_sigkill_during_sft_resumes_from_the_last_checkpoint(reproduced):
    path, env, _ = reproduced
    # a new setting, so DVC's run cache cannot restore the stage and it must train again
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["sft"]["drp"]["epochs"] = 11
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen(
        ["dvc", "repro", "-s", "drp_sft"],
        cwd=path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(
        (path / ".cache/drp_sft").glob("checkpoint-*/trainer_state.json")
    ):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((path / ".cache/drp_sft").glob("checkpoint-*")), "no checkpoint was saved before the kill"
    result = _run(["dvc", "repro", "-s", "drp_sft"], path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    m = json.loads((path / "metrics/drp_sft.json").read_text())
    assert (
        _latest_run(path, "drp_sft").data.metrics["resumed_from_step"] >= 4 and m["steps"] == 44
    )  # run bookkeeping: in MLflow
    assert len(json.loads((path / "metrics/drp_sft_loss.json").read_text())) == 44  # the curve spans the kill
    assert not (path / ".cache/drp_sft").exists()


def test_sft_stage_reports_bad_input_in_one_line(reproduced):
    path, env, _ = reproduced
    result = _run(_stage_cmd(path, "drp_sft", init="models/nowhere"), path, env)
    assert result.returncode == 1
    assert "error: drp_sft: cannot load a policy from 'models/nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@contextlib.contextmanager
def _small_disk(folder: Path, free_bytes: int):
    """`folder` on a file system with only `free_bytes` left: a tmpfs holding a copy of its files
    (given the privilege to mount), else the same files under a file-size limit on the writer."""
    used = sum(-(-p.stat().st_size // 4096) * 4096 + 4096 for p in folder.rglob("*"))
    moved = folder.with_name(folder.name + ".orig")
    folder.rename(moved)
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={used + free_bytes}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        shutil.copytree(moved, folder, dirs_exist_ok=True, symlinks=True)
        yield None if mounted else free_bytes  # without a mount: the writer's RLIMIT_FSIZE
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        shutil.rmtree(folder)
        moved.rename(folder)


def _limit_file_size(limit: int | None):
    def apply() -> None:
        import resource

        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_keeps_the_previous_outputs(reproduced):
    """A stage that cannot write fails with one line and leaves its previous outputs as they were."""
    path, env, _ = reproduced
    models, metrics = path / "models", path / "metrics/base_model.json"
    before, metrics_before = file_bytes(models), metrics.read_bytes()
    cmd = _stage_cmd(path, "base_model")

    with _small_disk(models, free_bytes=256 * 1024) as limit:  # the new checkpoint needs about 1.4 MB
        done = subprocess.run(
            cmd,
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=_limit_file_size(limit),
        )
        after = file_bytes(models)
        leftovers = [p.name for p in models.iterdir() if p.name.startswith(".")]
    assert done.returncode == 1, done.stderr
    assert _error_lines(done.stderr) in (
        ["error: base_model: No space left on device; the previous outputs are unchanged"],
        ["error: base_model: File too large; the previous outputs are unchanged"],
    ), done.stderr
    assert done.stderr.strip().splitlines()[-1] == _error_lines(done.stderr)[0]
    if (
        limit is None
    ):  # under a file-size limit MLflow's sqlite store fails too, and its logger prints tracebacks
        assert "Traceback" not in done.stderr
    assert after == before and leftovers == [] and metrics.read_bytes() == metrics_before


def test_forbidden_output_folder_keeps_the_previous_outputs(reproduced):
    path, env, _ = reproduced
    models, metrics = path / "models", path / "metrics/base_model.json"
    before, metrics_before = file_bytes(models), metrics.read_bytes()
    cmd = _stage_cmd(path, "base_model")
    # root ignores permissions unless it drops the capability (util-linux's setpriv)
    drop = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    models.chmod(0o555)
    try:
        done = _run([*drop, *cmd], path, env, timeout=300)
    finally:
        models.chmod(0o755)
    assert done.returncode == 1, done.stderr
    errors = _error_lines(done.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "error: base_model: Permission denied (models/.base.building-"
    ), done.stderr
    assert errors[0].endswith("; the previous outputs are unchanged") and "Traceback" not in done.stderr
    assert file_bytes(models) == before and metrics.read_bytes() == metrics_before


def test_stage_completes_without_mlflow_unless_tracking_is_strict(reproduced):
    from conftest import free_port

    path, env, _ = reproduced
    metrics = path / "metrics/base_model.json"
    metrics.unlink()
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    done = _run(_stage_cmd(path, "base_model"), path, down, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        "MLflow tracking at http://127.0.0.1:" in done.stderr and "continuing without tracking" in done.stderr
    )
    assert json.loads(metrics.read_text())["parameters"] > 0  # the metrics still land
    assert time.monotonic() - started < 120

    params_file = path / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["tracking"]["strict"] = True
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done = _run(_stage_cmd(path, "base_model"), path, down, timeout=300)
    finally:
        params_file.write_text(original)
    assert done.returncode == 1
    errors = _error_lines(done.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "error: base_model: MLflow tracking at http://127.0.0.1:"
    ), done.stderr
    assert "Traceback" not in done.stderr


@contextlib.contextmanager
def _workspace_restored(path: Path, env: dict):
    """Put params.yaml, dvc.lock and the outputs back as they were after a test that re-trains stages
    with other params, so every stage stays up to date for the tests after it: the cached outputs
    come back from the cache, the uncached ones (metrics/) from their saved text."""
    names = [
        "params.yaml",
        "dvc.lock",
        *(str(m.relative_to(path)) for m in (path / "metrics").glob("*.json")),
    ]
    saved = {name: (path / name).read_text() for name in names}
    try:
        yield
    finally:
        for name, text in saved.items():
            (path / name).write_text(text)
        restored = _run(["dvc", "checkout", "--force"], path, env)
        assert restored.returncode == 0, restored.stdout + restored.stderr


def test_two_machines_and_two_processes_train_through_the_launch_path(reproduced):
    """Scale-out for real on one host: crp_sft as two machines of one process each (the head
    node under `dvc repro`, the other running the same stage command, both configured only by
    environment), then rl_c as two processes on one node under DeepSpeed ZeRO-2 from params."""
    path = reproduced[0]
    with _workspace_restored(path, reproduced[1]):  # later tests commit the workspace: leave it as it was
        from conftest import free_port
        from videor4.pipeline.lineage import dep_md5

        path, env, _ = reproduced
        params = yaml.safe_load((path / "params.yaml").read_text())
        cluster = {
            **env,
            "VIDEOR4_NUM_PROCESSES": "2",
            "VIDEOR4_NUM_MACHINES": "2",
            "VIDEOR4_MAIN_PROCESS_IP": "127.0.0.1",
            "VIDEOR4_MAIN_PROCESS_PORT": str(free_port()),
        }
        worker = subprocess.Popen(
            _stage_cmd(path, "crp_sft"),
            cwd=path,
            env={**cluster, "VIDEOR4_MACHINE_RANK": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            head = _run(
                ["dvc", "repro", "-f", "-s", "crp_sft"], path, {**cluster, "VIDEOR4_MACHINE_RANK": "0"}
            )
            worker_log, _ = worker.communicate(timeout=300)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert head.returncode == 0, head.stdout + head.stderr
        assert worker.returncode == 0, worker_log
        assert "--num_machines 2 --machine_rank 1" in worker_log
        m = json.loads((path / "metrics/crp_sft.json").read_text())
        # 8 trajectories, batch 2 per process, 2 processes: 2 optimizer steps per epoch
        assert (
            _latest_run(path, "crp_sft").data.metrics["processes"] == 2
            and m["steps"] == 2 * params["sft"]["crp"]["epochs"]
        )
        lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]["crp_sft"]
        recorded = next(o["md5"] for o in lock["outs"] if o["path"] == "models/crp_sft")
        assert recorded == dep_md5(
            path / "models/crp_sft", root=path
        )  # DVC recorded what the two machines trained

        params["rl"]["deepspeed"] = "configs/deepspeed/zero2.json"
        params["rl"]["prompts_per_step"] = (
            1  # per process: two processes share the tiny build's 3 RL_c prompts
        )
        (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        done = _run(["dvc", "repro", "-s", "rl_c"], path, {**env, "VIDEOR4_NUM_PROCESSES": "2"})
        assert done.returncode == 0, done.stdout + done.stderr
        m = json.loads((path / "metrics/rl_c.json").read_text())
        latest = _latest_run(path, "rl_c")
        assert latest.data.metrics["processes"] == 2 and m["steps"] == params["rl"]["rl_c"]["steps"]
        assert latest.data.tags["launch.world_size"] == "2" and latest.info.status == "FINISHED"


def test_pretrain_stage_trains_and_scores_held_out_renders(reproduced):
    path, _, _ = reproduced
    m = json.loads((path / "metrics/pretrain.json").read_text())
    assert m["steps"] == 4 and m["held_out"] == 4 and m["train_loss_first"] is not None
    for name in (
        "read_acc",
        "read_lowres_acc",
        "read_mc_acc",
        "read_clip_acc",
        "locate_cover",
        "locate_clip_cover",
        "read_answer_acc",  # the reading copied into the boxed answer
        "locate_named_acc",  # the box said after the asked panel's name
    ):
        low, high = m[f"{name}_ci95"]
        assert 0.0 <= low <= m[name] <= high <= 1.0
    rows = [json.loads(line) for line in (path / "reports/pretrain_held_out.jsonl").read_text().splitlines()]
    assert sorted({r["task"] for r in rows}) == [
        "locate",
        "locate_clip",
        "read",
        "read_clip",
        "read_lowres",
        "read_mc",
    ]
    assert len(rows) == 24
    # read and read_lowres ask the same questions, one zoomed, one on the low-resolution view
    assert [r["answer"] for r in rows if r["task"] == "read"] == [
        r["answer"] for r in rows if r["task"] == "read_lowres"
    ]
    assert (path / "models/pretrain/config.json").is_file() and not any(
        "perception_heads" in p.name for p in (path / "models/pretrain").iterdir()
    )


# the last two change the workspace (a commit and a queue, an experiment's outputs): they run last
def _wait_for_the_queue(path: Path, env: dict, timeout: float = 420) -> str:
    """`dvc queue status` once nothing is queued or running (bounded in time)."""
    deadline = time.time() + timeout
    status = ""
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], path, env).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")


def test_queued_experiments_in_parallel_log_to_the_workspace_store(reproduced):
    """`dvc exp run --queue` twice, `dvc queue start -j 2`: each experiment runs in its own copy
    under .dvc/tmp/exps, and each is a pipeline run of its own, with its stage children, in the
    workspace's MLflow store."""
    path, env, _ = reproduced
    # queued experiments start from a commit: bring the workspace the earlier tests left up to date and
    # commit it (their params and the lock that matches them), so each experiment re-runs eval and figures
    for cmd in (["dvc", "repro"], ["git", "add", "-A"], ["git", "commit", "-qm", "run"]):
        assert _run(cmd, path, env).returncode == 0
    names = {"q-steps1": 1, "q-steps3": 3}
    for name, steps in names.items():
        queued = _run(
            ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eval.max_steps={steps}"], path, env
        )
        assert queued.returncode == 0, queued.stdout + queued.stderr
    # the workers it starts outlive it and would hold a captured pipe open: its output goes to a file
    with open(path.parent / "queue.log", "w") as log:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"],
            cwd=path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    try:
        assert started.returncode == 0, (path.parent / "queue.log").read_text()
        status = _wait_for_the_queue(path, env)
    finally:
        _run(["dvc", "queue", "stop", "--kill"], path, env)  # the workers this test started, if any is left
    for name in names:
        assert re.search(rf"{name}\s.*Success", status), status
    client, pipelines = _mlflow_runs(path, pipelines=True)
    by_name = {p.data.tags.get("dvc.exp_name"): p for p in pipelines}
    assert set(names) <= set(by_name), _run_tree(client, pipelines[0].info.experiment_id)
    keys = {by_name[name].data.tags["videor4.pipeline"] for name in names}
    assert len(keys) == 2  # two processes, two pipeline runs: nothing mixed
    for name, steps in names.items():
        run = by_name[name]
        assert run.info.run_name.startswith(f"pipeline {name} ") and run.data.params["eval.max_steps"] == str(
            steps
        )
        query = f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        children = {r.info.run_name: r for r in client.search_runs([run.info.experiment_id], query)}
        assert {"eval", "figures"} == set(children), _run_tree(client, run.info.experiment_id)
        assert children["eval"].data.params["eval.max_steps"] == str(steps)
    assert not list((path / ".dvc" / "tmp").rglob("mlflow.db"))  # no store went with a temporary copy


def test_a_data_size_experiment_leaves_the_tokenizer_base_and_pretraining(reproduced):
    """The tokenizer trains on a build at data.tokenizer_corpus's sizes: fewer DRP trajectories
    re-run build_data, and DVC finds base_model and pretrain up to date."""
    path, env, _ = reproduced
    targets = ["build_data", "base_model", "pretrain"]
    result = _run(["dvc", "exp", "run", "-n", "fewer-drp", "-S", "data.sizes.drp=6", *targets], path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"build_data"}, result.stdout
    assert len((path / "data/built/sft_drp.jsonl").read_text().splitlines()) == 6
    status = json.loads(_run(["dvc", "status", "--json"], path, env).stdout)
    assert "drp_sft" in status and not {"base_model", "pretrain"} & set(status), status
