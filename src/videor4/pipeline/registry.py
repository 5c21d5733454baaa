"""Checkpoints as MLflow models.

Each trained checkpoint is logged as an MLflow (pyfunc) model that answers questions about
videos by rumination, and registered as a new version of one registered model per stage
(`video-r4-rl_c`, ...), tagged with its DVC md5 and git commit.  `resolve_checkpoint` turns
what a user types — a local directory, `runs:/<run id>/model` or `models:/<name>/<version>` —
back into a checkpoint directory, so `video-r4 ask` and `video-r4 eval` take any of them.

    mlflow.pyfunc.load_model("models:/video-r4-rl_c/1").predict(
        pandas.DataFrame({"video": ["talk.mp4"], "question": ["What is on the slide?"]}))

What is safe: the model is logged from code (`mlflow_model.py`), so `mlflow.pyfunc.load_model`
rebuilds it by running that file with the installed videor4, unpickling nothing.  It still runs
the code file stored with the model, so load only from a store you trust as your own code (a
store where others can write can replace that file).  `resolve_checkpoint` (what `video-r4 ask`
and `eval` use) runs nothing from the store: it reads the MLmodel YAML and the checkpoint's files,
checks that the checkpoint lies inside what was downloaded and that a base_model.json reference
names a Hub model, not a local path; the weights are then loaded by transformers (safetensors).

Imported only when a model is logged or resolved: `mlflow.pyfunc` takes seconds to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from videor4.core.io import load_json_file, path_inside, project_root
from videor4.pipeline.tracking import is_model_uri, redact_uri

MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run id>/model
CHECKPOINT_ARTIFACT = "checkpoint"  # the checkpoint directory inside the logged model
REGISTERED_PREFIX = "video-r4-"
MODEL_CACHE = Path(".cache") / "models"  # under the project root: downloaded models by run id and path
# what a downloaded base_model.json may name: a Hub repo id ("org/name"), never a local path
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def registered_model_name(stage: str) -> str:
    return f"{REGISTERED_PREFIX}{stage}"


class RuminationModel(mlflow.pyfunc.PythonModel):
    """A policy checkpoint as an MLflow model: each input row (`video`: a video file or page folder,
    `question`) → the answer the policy gives after ruminating (None when it gave none).  The
    vision settings and rollout limits are the training run's (`model_config`)."""

    def load_context(self, context) -> None:
        from videor4.policy.model import load_policy

        self.policy = load_policy(context.artifacts[CHECKPOINT_ARTIFACT], device="cpu")
        self.config = dict(context.model_config or {})

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str | None]:
        from videor4.core.schema import Sample
        from videor4.policy.rollout import RolloutSettings, ruminate
        from videor4.rumination.tools import VisionConfig
        from videor4.rumination.trajectory import sample_env

        vision = VisionConfig(**self.config.get("vision", {}))
        limits = {**self.config.get("rollout", {}), "temperature": 0.0, "batch_size": 1, "force_answer": True}
        settings = RolloutSettings(**limits)
        rows = model_input.to_dict("records")
        answers = []
        for i, row in enumerate(rows):
            sample = Sample.unanswered(
                str(row["video"]), str(row["question"]), f"predict-{i}", "mlflow"
            ).to_dict()
            env = sample_env(sample, vision, max_images=settings.max_images)
            answers.append(ruminate(self.policy, sample, env, settings).answer)
        return answers


@contextlib.contextmanager
def _global_store(tracking_uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide client (which Model.log and download_artifacts use) at
    `tracking_uri` and, when given, the run's experiment for the block; then put back the
    MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID that were there, so a call leaves no store behind."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    mlflow.set_tracking_uri(tracking_uri)
    if experiment_id is not None:
        mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None unsets it
        if saved["MLFLOW_EXPERIMENT_ID"] is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = saved["MLFLOW_EXPERIMENT_ID"]


def log_checkpoint_model(
    run_id: str,
    tracking_uri: str,
    *,
    checkpoint: str | os.PathLike,
    stage: str,
    model_config: Mapping[str, Any],
    version_tags: Mapping[str, str],
    pip_requirements: list[str] | None = None,
) -> dict[str, str]:
    """Log `checkpoint` as the run's model and register it as a new version of `video-r4-<stage>`;
    returns the model's URIs and version."""
    from mlflow.models import Model, ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    client = MlflowClient(tracking_uri=tracking_uri)
    name = registered_model_name(stage)
    with _global_store(
        tracking_uri, client.get_run(run_id).info.experiment_id
    ):  # the logged model goes to the run's experiment
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(
                MODEL_CODE
            ),  # models from code: the model is rebuilt by running it, not unpickled
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            model_config=dict(model_config),
            pip_requirements=pip_requirements or [],
            registered_model_name=name,
            # what predict takes and gives, shown on the model's page (inference from a DataFrame hint cannot)
            signature=ModelSignature(
                inputs=Schema([ColSpec("string", "video"), ColSpec("string", "question")]),
                outputs=Schema([ColSpec("string")]),
            ),
        )
    version = str(info.registered_model_version)
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    return {
        "model_uri": f"runs:/{run_id}/{MODEL_NAME}",
        "registered_model": name,
        "version": version,
        "registered_uri": f"models:/{name}/{version}",
    }


def _cache_key(ref: str, tracking_uri: str) -> str:
    """Where a model URI is kept in the cache: `runs:/<run id>/<path>` as `<run id>/<path>`; a
    registered version (by number, alias or stage) by the run and source it was registered from,
    so a moved alias gets its own download.  Run and logged-model ids are unique across stores."""
    if ref.startswith("runs:/"):
        return ref[len("runs:/") :]
    from mlflow.store.artifact.utils.models import get_model_name_and_version
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = get_model_name_and_version(client, ref)
    if len(found) == 1:  # models:/<logged model id>
        return found[0]
    version = client.get_model_version(*found)
    source = version.source.rstrip("/").rsplit("/", 1)[-1]
    if version.run_id:
        return f"{version.run_id}/{source}"
    return f"sources/{hashlib.sha256(version.source.encode()).hexdigest()[:16]}"


def _download(ref: str, tracking_uri: str, root: Path) -> Path:
    """The model `ref` names, from the cache under `root` or else downloaded into it (into a
    temporary sibling first, renamed into place when complete, so a kill leaves no half model)."""
    where = path_inside(root, _cache_key(ref, tracking_uri))
    if (where / "MLmodel").is_file():
        return where
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}.download-", dir=where.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(tmp)))
        try:
            os.replace(local, where)
        except OSError:  # another process put the same model there first
            if not (where / "MLmodel").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return where


def check_reference(checkpoint: Path, ref: str) -> None:
    """A downloaded checkpoint that is a reference (base_model.json) must name a Hub model: a
    local path in it would point loading at any folder of this machine.  ValueError naming `ref`."""
    from videor4.policy.model import REFERENCE_FILE

    path = checkpoint / REFERENCE_FILE
    if not path.is_file():
        return
    doc = load_json_file(path, "model reference")
    name = doc.get("name_or_path") if isinstance(doc, dict) else None
    revision = doc.get("revision") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not isinstance(revision, (str, type(None))):
        shape = '{"name_or_path": <Hub id>, "revision": <str or null>}'
        raise ValueError(f"{ref}: {REFERENCE_FILE} must be {shape}")
    if not _HUB_ID.match(name) or ".." in name or Path(name).exists():
        refused = "which is not a Hub model id (a local path is refused)"
        raise ValueError(f"{ref}: {REFERENCE_FILE} names {name!r}, {refused}")


def resolve_checkpoint(
    ref: str | os.PathLike, tracking_uri: str, cache: str | os.PathLike | None = None
) -> Path:
    """The checkpoint directory `ref` names: a local path as it is; `runs:/…` or `models:/…` from
    the tracking store, downloaded once into `cache` (default <project>/.cache/models) by run id
    and path and reused.  ValueError with one line when the store has no such model, when its
    MLmodel puts the checkpoint outside what was downloaded, or when it is a reference to a local path."""
    if not is_model_uri(ref):
        return Path(ref)
    from mlflow.exceptions import MlflowException

    ref = str(ref)
    root = Path(cache) if cache is not None else project_root() / MODEL_CACHE
    try:
        with _global_store(tracking_uri):
            local = _download(ref, tracking_uri, root)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(redact_uri(f"cannot fetch {ref} from {tracking_uri}: {first}")) from None
    except ValueError as exc:  # a run id or path that would leave the cache
        raise ValueError(f"{ref} is not a model URI this store can hold: {exc}") from None
    from mlflow.models import Model

    try:  # the pyfunc flavour records where its `checkpoint` artifact lies in the model
        artifact = Model.load(str(local)).flavors["python_function"]["artifacts"][CHECKPOINT_ARTIFACT]["path"]
    except (MlflowException, OSError, KeyError, TypeError):
        raise ValueError(f"{ref} is not a video-r4 model (no {CHECKPOINT_ARTIFACT} artifact)") from None
    try:
        checkpoint = path_inside(local, str(artifact))
    except ValueError:
        outside = f"its MLmodel puts the checkpoint at {artifact!r}, outside the downloaded model"
        raise ValueError(f"{ref}: {outside}") from None
    check_reference(checkpoint, ref)
    return checkpoint
