"""Experiment tracking: MLflow behind a small interface.

The rest of the library knows nothing of MLflow; `pipeline.lineage` adds the lineage.  Tracking is
best effort by default: when the backend is unreachable or fails, one warning is
logged and the run carries on as a local no-op record (`Run.active` is False), so a
training job never dies because a tracking server is down.  With `strict=True` such a
failure raises `RuntimeError` instead.

`mlflow` is imported only when a run starts (the import alone takes about 1.5 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger("videor4.pipeline.tracking")

PARENT_RUN_ENV = "VIDEOR4_PARENT_RUN_ID"
# What the experiment holds, as MLflow 3 records it.  MLflow 3.17's UI no longer picks its view
# from this tag (a global GenAI / Model training switch, `?workflowType=machine_learning` in the
# URL, does); the tag still says what the experiment is, to MLflow's APIs and older UIs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
DATASET_CONTEXT_TAG = "mlflow.data.context"
MODEL_URI_SCHEMES = ("runs:/", "models:/")  # a run's logged model, a registered model's version
PIPELINE_TAG = "videor4.pipeline"  # on a pipeline's parent run: the key its stages find it by
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

# MLflow's limits (mlflow.utils.validation), fixed here so the import stays lazy.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
PARAMS_TAGS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
TRUNCATED = "...[truncated]"

# MLflow's HTTP defaults retry for minutes; a tracking outage should cost seconds.
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

# MLflow accepts only these characters in keys (alphanumerics, _ - . space / :).
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /:")


# user-info in a URI (scheme://user:token@host): greedy up to the last "@" before the path, since
# a password sometimes holds a raw "@"
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_uri(text: Any) -> str:
    """`text` (a URI, a param value, a message) with the user-info of every URI in it removed:
    what is logged, tagged or printed must not carry a token (http://user:token@host → http://host)."""
    return _USER_INFO.sub(r"\g<scheme>", str(text))


def is_model_uri(ref: str | os.PathLike) -> bool:
    return str(ref).startswith(MODEL_URI_SCHEMES)


def is_local_store(uri: str) -> bool:
    """A sqlite database, a file store or a bare path: no tracking server."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class TrackingError(RuntimeError):
    """Strict tracking: the backend failed (one line naming the store and the cause)."""


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset a run read or wrote, as MLflow's Dataset column shows it: its path as the name,
    its DVC md5 as the digest, where it lies as the source, and a small profile (rows, files)."""

    name: str
    digest: str
    source: str
    profile: Mapping[str, Any] | None = None


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    artifact_location: str | None = None
    experiment: str = "video-r4"
    strict: bool = False

    def resolved_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else the configured URI, else the workspace's mlflow.db (sqlite)."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri
        if uri:
            return uri
        return f"sqlite:///{workspace_root() / DEFAULT_DB}"

    @property
    def local_store(self) -> bool:
        """Runs go to a database or folder on this machine, not to a tracking server."""
        return is_local_store(self.resolved_uri())

    def resolved_artifact_location(self, uri: str) -> str | None:
        """Where a newly created experiment stores artifacts.

        A local store (sqlite or file) gets ./mlartifacts; a tracking server decides
        for itself (None) unless a location such as an s3:// URI is configured.
        """
        if self.artifact_location:
            return self.artifact_location
        if is_local_store(uri):
            return (workspace_root() / DEFAULT_ARTIFACTS).as_uri()
        return None


def workspace_root() -> Path:
    """Where the default store lives: the repository `dvc repro` / `dvc exp run` was started in.

    A queued or `--temp` experiment runs in a copy under .dvc/tmp/exps/; DVC names the repository
    it came from in $DVC_ROOT, so its runs join the workspace's store instead of a store that goes
    with the copy.  Outside DVC: the working directory."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"rl": {"lr": 1e-3}} -> {"rl.lr": 1e-3}; non-dict values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _clean_key(key: str) -> str:
    # an odd character in a key (e.g. a dependency path) must not make MLflow reject a batch
    return "".join(c if c in _KEY_CHARS else "_" for c in key)


def _truncate(value: Any, limit: int) -> str:
    text = redact_uri(value)  # every param and tag value passes here
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """A short description: wrapped errors (MLflow -> requests -> urllib3 -> socket)
    are named by their root cause, which says what actually went wrong."""
    root = exc
    seen = {id(exc)}
    while True:
        nxt = root.__cause__ or (None if root.__suppress_context__ else root.__context__)
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    lines = str(root).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[:limit] + "..."
    described = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return described if root is exc else f"{type(exc).__name__} ({described})"


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Run:
    """One tracked run.  Everything logged is also kept locally (`params`, `tags`,
    `metrics`, `history`), whether or not the backend accepted it."""

    def __init__(self, name: str, config: TrackingConfig) -> None:
        self.name = name
        self.config = config
        self.tracking_uri = config.resolved_uri()
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        # the stage's lineage tags as stage_run computed them (keys as declared, not cleaned), so
        # a stage can reuse a dependency's md5 instead of hashing it again
        self.lineage: dict[str, str] = {}
        self.metrics: dict[str, float] = {}  # the latest value of each metric
        self.history: list[tuple[str, float, int]] = []  # (key, value, step)
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._failed = False
        self.parent: Run | None = None  # the pipeline run this one is a child of, when there is one

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def active(self) -> bool:
        return self._client is not None and self._run_id is not None

    # -- backend failures -------------------------------------------------------

    def _backend_failed(self, action: str, exc: BaseException, quiet: bool = False) -> None:
        """Strict: raise.  Otherwise warn once and carry on without the backend."""
        self._client = None
        message = redact_uri(f"MLflow tracking at {self.tracking_uri} failed ({action}): {_one_line(exc)}")
        if self.config.strict and not quiet:
            raise TrackingError(message) from exc
        if not self._failed:  # one warning per run; later calls are silent no-ops
            self._failed = True
            logger.warning("%s; continuing without tracking for run %r", message, self.name)

    @contextlib.contextmanager
    def _guard(self, action: str, quiet: bool = False) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # any backend error: MlflowException, HTTP, sqlite, OS
            self._backend_failed(action, exc, quiet)

    # -- lifecycle ----------------------------------------------------------------

    def _open(self, params: Mapping[str, Any], tags: Mapping[str, Any], parent_run_id: str | None) -> None:
        for key, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(key, value)
        with self._guard("start"):
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = self._experiment_id(self._client)
            start_tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            self._run_id = self._client.create_run(
                experiment_id, run_name=self.name, tags=start_tags
            ).info.run_id
        self.set_tags(tags)
        self.log_params(params)

    def _open_pipeline(self, key: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        """Attach to the run tagged `PIPELINE_TAG = key` in the experiment, or create it; mark it RUNNING."""
        for k, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(k, value)
        created = False
        with self._guard("start pipeline"):
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = self._experiment_id(self._client)
            found = self._client.search_runs(
                [experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1
            )
            if found:
                self._run_id = found[0].info.run_id
                self._client.update_run(self._run_id, status="RUNNING")
            else:
                self._run_id = self._client.create_run(
                    experiment_id, run_name=self.name, tags={PIPELINE_TAG: key}
                ).info.run_id
                created = True
        if created:
            self.set_tags(tags)
            self.log_params(params)

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """The latest run of this experiment with all these tags (e.g. the stage that wrote a checkpoint)."""
        if not self.active:
            return None
        try:
            experiment_id = self._client.get_run(self._run_id).info.experiment_id
            condition = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            found = self._client.search_runs(
                [experiment_id],
                filter_string=condition,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        except Exception as exc:  # a lookup is informative only: never fail or deactivate the run for it
            failed = redact_uri(_one_line(exc))
            logger.warning("MLflow search for runs tagged %s failed: %s", dict(tags), failed)
            return None
        return found[0].info.run_id if found else None

    def _experiment_id(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        name = self.config.experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name,
                    artifact_location=self.config.resolved_artifact_location(self.tracking_uri),
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
                )
            except MlflowException:
                # another stage may have created it in the meantime
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            logger.info("restoring deleted MLflow experiment %r", name)
            client.restore_experiment(experiment.experiment_id)
        if (
            EXPERIMENT_KIND_TAG not in experiment.tags
        ):  # made before the tag, or by hand: a user's own kind is kept
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return experiment.experiment_id

    def _close(self, status: str, quiet: bool = False) -> None:
        if self._client is not None and self._run_id is not None:
            with self._guard("end", quiet):
                self._client.set_terminated(self._run_id, status=status)

    # -- logging ------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; nested dicts become dotted keys, long values are truncated."""
        new: dict[str, str] = {}
        for key, value in flatten(params).items():
            key, text = _clean_key(key), _truncate(value, MAX_PARAM_VALUE)
            if key in self.params:
                if self.params[key] != text:  # MLflow refuses to change a logged param
                    logger.warning(
                        "param %r already logged as %r; ignoring new value %r", key, self.params[key], text
                    )
                continue
            new[key] = text
        self.params.update(new)
        if not new or not self.active:
            return
        from mlflow.entities import Param

        with self._guard("log_params"):
            for batch in _chunks([Param(k, v) for k, v in new.items()], PARAMS_TAGS_PER_BATCH):
                self._client.log_batch(self._run_id, params=batch, synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        new = {_clean_key(k): _truncate(v, MAX_TAG_VALUE) for k, v in flatten(tags).items()}
        self.tags.update(new)
        if not new or not self.active:
            return
        from mlflow.entities import RunTag

        with self._guard("set_tags"):
            for batch in _chunks([RunTag(k, v) for k, v in new.items()], PARAMS_TAGS_PER_BATCH):
                self._client.log_batch(self._run_id, tags=batch, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (nested dicts become dotted keys); skips non-finite values."""
        step = int(step or 0)
        values: dict[str, float] = {}
        skipped: list[str] = []
        for key, value in flatten(metrics).items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                skipped.append(key)
                continue
            if not math.isfinite(number):
                skipped.append(key)
                continue
            values[_clean_key(key)] = number
        if skipped:
            logger.warning("not logging non-finite or non-numeric metrics: %s", ", ".join(sorted(skipped)))
        for key, number in values.items():
            self.metrics[key] = number
            self.history.append((key, number, step))
        if not values or not self.active:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        with self._guard("log_metrics"):
            entries = [Metric(k, v, timestamp, step) for k, v in values.items()]
            for batch in _chunks(entries, METRICS_PER_BATCH):
                self._client.log_batch(self._run_id, metrics=batch, synchronous=True)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or a directory (a missing path is the caller's error and raises)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact not found: {path}")
        if not self.active:
            return
        with self._guard("log_artifact"):
            if path.is_dir():
                self._client.log_artifacts(self._run_id, str(path), artifact_path)
            else:
                self._client.log_artifact(self._run_id, str(path), artifact_path)

    def log_datasets(self, datasets: list[DatasetRecord], context: str) -> None:
        """Log datasets as the run's dataset inputs, tagged with `context` ("input", "output", ...)."""
        if not datasets or not self.active:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entries = [
            DatasetInput(
                Dataset(
                    name=d.name,
                    digest=d.digest,
                    source_type="local",
                    source=json.dumps({"uri": Path(d.source).resolve().as_uri()}),
                    profile=json.dumps(dict(d.profile)) if d.profile else None,
                ),
                tags=[InputTag(DATASET_CONTEXT_TAG, context)],
            )
            for d in datasets
        ]
        with self._guard("log_inputs"):
            self._client.log_inputs(self._run_id, datasets=entries)

    def log_model(self, log: Callable[[str, str], dict[str, str]]) -> dict[str, str]:
        """Log a model with `log(run_id, tracking_uri)` (e.g. `registry.log_checkpoint_model`), guarded
        as every other call here: a backend failure warns (raises when strict); {} without a backend."""
        if not self.active:
            return {}
        with self._guard("log_model"):
            return log(self._run_id, self.tracking_uri)
        return {}

    def log_figure(self, figure: Any, name: str) -> None:
        """Store a matplotlib figure as the image artifact `name` (e.g. figures/scaling.png)."""
        if not self.active:
            return
        with self._guard("log_figure"):
            self._client.log_figure(self._run_id, figure, name)

    def log_dict(self, obj: Any, name: str) -> None:
        """Store `obj` as the artifact `name` (YAML for .yaml/.yml, else JSON)."""
        # serialize first: an unserializable object is the caller's error, not a backend failure
        if name.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(obj, sort_keys=True)
        else:
            text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
        self.log_text(text, name)

    def log_text(self, text: str, name: str) -> None:
        """Store `text` as the artifact `name` (a path inside the run's artifacts)."""
        if not self.active:
            return
        with self._guard("log_text"):
            self._client.log_text(self._run_id, text, name)


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED"
    return "FAILED"


@contextlib.contextmanager
def start_run(
    run_name: str,
    config: TrackingConfig,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """A tracked run: FINISHED on normal exit, FAILED (KILLED on Ctrl-C) if an exception escapes.

    The parent run defaults to $VIDEOR4_PARENT_RUN_ID, so a pipeline driver can group
    its stages' runs under one parent.
    """
    run = Run(run_name, config)
    run._open(params or {}, tags or {}, parent_run_id or os.environ.get(PARENT_RUN_ENV) or None)
    try:
        yield run
    except BaseException as exc:
        # never let a tracking error hide the exception that is propagating
        run._close(_status_for(exc), quiet=True)
        raise
    run._close("FINISHED")


@contextlib.contextmanager
def start_child_run(
    run_name: str,
    config: TrackingConfig,
    pipeline_key: str | None,
    pipeline_name: str,
    pipeline_params: Mapping[str, Any] | None = None,
    pipeline_tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Run]:
    """A run inside the pipeline run identified by `pipeline_key` (found by its tag, else created
    with `pipeline_params` / `pipeline_tags`).  The pipeline run is RUNNING while a child runs and
    takes the child's end status, so a whole pipeline reads FINISHED or FAILED in the UI.
    Without a key (or with $VIDEOR4_PARENT_RUN_ID set) this is `start_run`.
    """
    if not pipeline_key or os.environ.get(PARENT_RUN_ENV):
        with start_run(run_name, config, params, tags) as run:
            yield run
        return
    parent = Run(pipeline_name, config)
    parent._open_pipeline(pipeline_key, pipeline_params or {}, pipeline_tags or {})
    try:
        with start_run(run_name, config, params, tags, parent_run_id=parent.run_id) as run:
            run.parent = parent if parent.active else None
            yield run
    except BaseException as exc:
        parent._close(_status_for(exc), quiet=True)
        raise
    parent._close("FINISHED")
