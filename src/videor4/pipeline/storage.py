"""S3 storage: where the DVC remote and MLflow's artifacts live, and a preflight check.

One bucket serves both: DVC's cache under `s3://<bucket>/<prefix>/dvc` and MLflow's
artifacts under `s3://<bucket>/<prefix>/mlflow`.  Any S3-compatible server works
(MinIO, Ceph, moto) through an endpoint URL.  Credentials come only from the standard
AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance
roles): nothing here reads or writes them.

`check()` turns the ways storage goes wrong (endpoint unreachable, bucket missing,
credentials missing or rejected) into one line that names what failed, before a
push or pull starts moving data.  boto3 is imported only when a check runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videor4.pipeline.tracking import redact_uri

# Environment variables that override params.yaml's `storage:` section (the AWS ones are standard).
BUCKET_ENV = "VIDEOR4_S3_BUCKET"
PREFIX_ENV = "VIDEOR4_S3_PREFIX"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV = "AWS_DEFAULT_REGION"
MLFLOW_ENDPOINT_ENV = "MLFLOW_S3_ENDPOINT_URL"

KNOWN_KEYS = {"bucket", "prefix", "endpoint_url", "region", "dvc_remote"}
# errors S3 answers when the key pair is wrong (AWS and the compatible servers use these codes)
BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthFailure",
}


class StorageError(RuntimeError):
    """Storage is misconfigured or unreachable; the message is one line naming what failed."""


@dataclass(frozen=True)
class S3Settings:
    bucket: str | None = None
    prefix: str = "video-r4"
    endpoint_url: str | None = None  # None: AWS itself
    region: str | None = None
    dvc_remote: str = "storage"  # the DVC remote's name

    @property
    def configured(self) -> bool:
        return bool(self.bucket)

    def require(self) -> None:
        """Raise StorageError unless a bucket is configured."""
        if not self.bucket:
            raise StorageError(
                f"no S3 bucket configured (set storage.bucket in params.yaml or ${BUCKET_ENV})"
            )

    @property
    def endpoint_name(self) -> str:
        """How messages name the endpoint (without any user:token@ in its URL)."""
        return redact_uri(self.endpoint_url) if self.endpoint_url else "AWS"

    def url(self, *parts: str) -> str:
        """s3://bucket/prefix/parts..."""
        self.require()
        keys = [p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")]
        return "/".join([f"s3://{self.bucket}", *keys])

    @property
    def dvc_url(self) -> str:
        return self.url("dvc")

    @property
    def mlflow_url(self) -> str:
        return self.url("mlflow")

    def where(self) -> str:
        """How a message names this location."""
        return f"s3://{self.bucket} at {self.endpoint_name}"


def s3_settings(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> S3Settings:
    """Settings from params.yaml's `storage:` section, each overridden by its environment variable."""
    environ = os.environ if environ is None else environ
    section = dict(params.get("storage") or {})
    unknown = sorted(set(section) - KNOWN_KEYS)
    if unknown:
        raise ValueError(
            f"unknown params storage: {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    defaults = S3Settings()
    endpoint = next((environ[k] for k in ENDPOINT_ENVS if environ.get(k)), None) or section.get(
        "endpoint_url"
    )
    bucket = environ.get(BUCKET_ENV) or section.get("bucket")
    if bucket and ("/" in bucket or bucket.startswith("s3:")):
        raise ValueError(
            f"storage.bucket must be a bare bucket name, not {bucket!r} (the path goes in storage.prefix)"
        )
    return S3Settings(
        bucket=bucket or None,
        prefix=str(environ.get(PREFIX_ENV) or section.get("prefix") or defaults.prefix),
        endpoint_url=endpoint or None,
        region=environ.get(REGION_ENV) or section.get("region") or None,
        dvc_remote=str(section.get("dvc_remote") or defaults.dvc_remote),
    )


def client(settings: S3Settings, connect_timeout: float = 5.0, retries: int = 1):
    """A boto3 S3 client for these settings that fails in seconds, not minutes."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=30,
        retries={"max_attempts": retries, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
    )


def describe_error(exc: BaseException, settings: S3Settings) -> str:
    """One line saying which of endpoint, bucket or credentials failed, and how."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return (
            f"no usable AWS credentials for {settings.where()} ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
    if isinstance(exc, (EndpointConnectionError, BotoConnectionError)):
        return f"S3 endpoint {settings.endpoint_name} is unreachable: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket", "404") or status == 404:
            return f"S3 bucket {settings.bucket!r} does not exist at {settings.endpoint_name}"
        if code in BAD_CREDENTIALS:
            return (
                f"S3 credentials were rejected by {settings.endpoint_name} ({code}): "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if code in ("403", "AccessDenied", "Forbidden") or status == 403:
            return (
                f"access to S3 bucket {settings.bucket!r} at {settings.endpoint_name} was denied "
                "(credentials rejected, or not allowed on this bucket)"
            )
        return f"S3 request to {settings.where()} failed: {code or status}: {error.get('Message', exc)}"
    text = str(exc).strip().splitlines()
    return f"S3 request to {settings.where()} failed: {type(exc).__name__}: {text[0] if text else ''}"


def check(settings: S3Settings, write: bool = False) -> None:
    """Make sure the bucket can be reached and read (and with `write`, written); raise StorageError if not.

    The probes are the calls DVC and MLflow will make: list under the prefix and, for
    `write`, put and delete one small object under it.
    """
    settings.require()
    s3 = client(settings)
    prefix = settings.prefix.strip("/")
    probe_key = f"{prefix}/.videor4-write-probe-{os.getpid()}".lstrip("/")
    try:
        # ListObjectsV2 says "NoSuchBucket" and names credential errors; HeadBucket only says 403/404
        s3.list_objects_v2(Bucket=settings.bucket, Prefix=prefix, MaxKeys=1)
        if write:
            s3.put_object(Bucket=settings.bucket, Key=probe_key, Body=b"")
            s3.delete_object(Bucket=settings.bucket, Key=probe_key)
    except Exception as exc:  # botocore's errors; anything else is described as it is
        # botocore's text holds the endpoint URL, user-info and all
        raise StorageError(redact_uri(describe_error(exc, settings))) from exc


def mlflow_environment(settings: S3Settings) -> dict[str, str]:
    """Environment MLflow's S3 artifact client needs for these settings (an endpoint, if not AWS)."""
    return {MLFLOW_ENDPOINT_ENV: settings.endpoint_url} if settings.endpoint_url else {}
