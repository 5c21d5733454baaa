"""S3 storage against a real S3-compatible server (moto in server mode, signatures checked):
the preflight check and its one-line errors, and MLflow artifacts on S3, both through an
`mlflow server` started here and from the local sqlite store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import Server, file_bytes, free_port
from videor4.pipeline.checkpoint import log_checkpoint
from videor4.pipeline.registry import resolve_checkpoint
from videor4.pipeline.runner import tracking_config
from videor4.pipeline.storage import S3Settings, StorageError, check, s3_settings
from videor4.pipeline.tracking import TrackingConfig, start_run

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"
)  # inside MLflow


@pytest.fixture
def aws_env(monkeypatch, s3_server):
    """This process uses the test server with good credentials (restored afterwards)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "VIDEOR4_S3_", "MLFLOW_S3_")):
            monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        if name.startswith(("AWS_", "VIDEOR4_S3_")):
            monkeypatch.setenv(name, value)
    return s3_server


def keys_under(server, prefix: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=server.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_settings_from_params_and_environment() -> None:
    params = {"storage": {"bucket": "b", "prefix": "team/exp", "endpoint_url": "http://minio:9000"}}
    settings = s3_settings(params, environ={})
    assert settings.dvc_url == "s3://b/team/exp/dvc" and settings.mlflow_url == "s3://b/team/exp/mlflow"
    assert settings.endpoint_url == "http://minio:9000" and settings.dvc_remote == "storage"
    env = {
        "VIDEOR4_S3_BUCKET": "other",
        "VIDEOR4_S3_PREFIX": "p",
        "AWS_ENDPOINT_URL": "http://a",
        "AWS_ENDPOINT_URL_S3": "http://s3",
    }
    settings = s3_settings(params, environ=env)
    assert (settings.bucket, settings.prefix, settings.endpoint_url) == ("other", "p", "http://s3")
    assert not s3_settings({}, environ={}).configured
    with pytest.raises(StorageError, match="no S3 bucket configured"):
        s3_settings({}, environ={}).url()
    with pytest.raises(ValueError, match="unknown params storage: buckt"):
        s3_settings({"storage": {"buckt": "typo"}}, environ={})
    with pytest.raises(ValueError, match="bare bucket name"):
        s3_settings({"storage": {"bucket": "s3://b/x"}}, environ={})


def test_check_passes_and_leaves_nothing_behind(aws_env) -> None:
    settings = s3_settings({"storage": {"prefix": "checked"}})
    check(settings, write=True)
    assert keys_under(aws_env, "checked") == []  # the write probe is deleted again


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unreachable endpoint", r"^S3 endpoint http://127\.0\.0\.1:\d+ is unreachable: Could not connect"),
        ("missing bucket", r"^S3 bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+$"),
        ("unknown key", r"^S3 credentials were rejected by http://127\.0\.0\.1:\d+ \(InvalidAccessKeyId\)"),
        (
            "wrong secret",
            r"^S3 credentials were rejected by http://127\.0\.0\.1:\d+ \(SignatureDoesNotMatch\)",
        ),
        ("no credentials", r"^no usable AWS credentials for s3://videor4-tests at http://127\.0\.0\.1:\d+"),
    ],
)
def test_check_names_what_failed_in_one_line(aws_env, monkeypatch, tmp_path, case, expected) -> None:
    settings = S3Settings(bucket=aws_env.bucket, endpoint_url=aws_env.endpoint, region="us-east-1")
    if case == "unreachable endpoint":
        settings = S3Settings(
            bucket=aws_env.bucket, endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1"
        )
    elif case == "missing bucket":
        settings = S3Settings(bucket="no-such-bucket", endpoint_url=aws_env.endpoint, region="us-east-1")
    elif case == "unknown key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    elif case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:  # nothing in the environment, no profile files, no instance metadata
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError, match=expected) as info:
        check(settings, write=True)
    assert "\n" not in str(info.value)


def test_mlflow_server_registers_checkpoints_and_keeps_them_on_s3(
    aws_env, tiny_dir, tmp_path, monkeypatch
) -> None:
    """Proxied artifacts: the client talks only to `mlflow server`, which writes to S3.  The checkpoint
    is the run's model and version 1 of `video-r4-sft`, and `models:/` and `runs:/` bring it back."""
    import psutil
    from mlflow.tracking import MlflowClient

    port = free_port()
    env = aws_env.env(MLFLOW_S3_ENDPOINT_URL=aws_env.endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    exe = str(Path(sys.executable).parent / "mlflow")
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
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            f"s3://{aws_env.bucket}/served",
        ],
        port,
        env,
        tmp_path / "mlflow-server.log",
    )
    started = server.processes()
    tracking_before = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    try:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the client needs no S3 credentials
            monkeypatch.delenv(name)
        # Downloads stream through the server: moto with signature checks answers the
        # presigned URLs MLflow would otherwise hand out with HTTP 500 (AWS and MinIO accept them).
        monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        params = {"vision": {"num_frames": 4}, "rollout": {"max_tool_calls": 2}}
        with start_run(
            "sft", TrackingConfig(tracking_uri=server.url, experiment="s3-served", strict=True)
        ) as run:
            info = log_checkpoint(run, tiny_dir, 200, "sft", params)
        assert info["md5"].endswith(".dir")
        assert (
            run.tags["model.registered_uri"] == "models:/video-r4-sft/1"
            and run.tags["model.model_uri"] == f"runs:/{run.run_id}/model"
        )
        version = MlflowClient(server.url).get_model_version("video-r4-sft", "1")
        assert (
            version.tags["dvc.md5"] == info["md5"]
            and version.tags["dvc.stage"] == "sft"
            and version.run_id == run.run_id
        )
        for uri in ("models:/video-r4-sft/1", f"runs:/{run.run_id}/model"):
            restored = resolve_checkpoint(uri, server.url, tmp_path / uri.split(":")[0])
            assert file_bytes(restored) == file_bytes(tiny_dir), uri
        stored = keys_under(aws_env, "served/")
        assert any(k.endswith(f"/artifacts/{tiny_dir.name}/config.json") for k in stored), stored
        with pytest.raises(
            ValueError, match=r"^cannot fetch models:/video-r4-sft/7 from http://127\.0\.0\.1:\d+: "
        ):
            resolve_checkpoint("models:/video-r4-sft/7", server.url, tmp_path / "missing")
        # MLflow's process-wide store is put back: the next tracking_config must not see this server
        assert {name: os.environ.get(name) for name in tracking_before} == tracking_before
    finally:
        server.stop()
    assert len(started) >= 1 and not any(
        p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started
    )


def test_local_store_with_a_bucket_keeps_artifacts_on_s3(aws_env, tmp_path, monkeypatch) -> None:
    """storage.bucket + the local sqlite store: new experiments put artifacts in s3://bucket/prefix/mlflow."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "")  # set and restored here; tracking_config fills it
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from params this time
    monkeypatch.chdir(tmp_path)
    params = {
        "storage": {"prefix": "local-store", "endpoint_url": aws_env.endpoint},
        "tracking": {"experiment": "s3-direct", "strict": True},
    }
    config = tracking_config(params)
    assert config.artifact_location == f"s3://{aws_env.bucket}/local-store/mlflow"
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == aws_env.endpoint
    with start_run("eval", config) as run:
        run.log_text("the eval table\n", "eval_table.md")
    client = MlflowClient(config.resolved_uri())
    assert client.get_experiment_by_name("s3-direct").artifact_location == config.artifact_location
    back = Path(client.download_artifacts(run.run_id, "eval_table.md", str(tmp_path)))
    assert back.read_text() == "the eval table\n"
    assert any(
        k.endswith(f"{run.run_id}/artifacts/eval_table.md")
        for k in keys_under(aws_env, "local-store/mlflow/")
    )
    # an explicit artifact location and a tracking server keep theirs
    assert (
        tracking_config({**params, "tracking": {"artifact_location": "file:///x"}}).artifact_location
        == "file:///x"
    )
    assert tracking_config({**params, "tracking": {"uri": "http://h:5000"}}).artifact_location is None
