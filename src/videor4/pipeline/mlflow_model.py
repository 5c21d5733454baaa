"""The file MLflow runs to rebuild a logged video-r4 model (MLflow's models from code): loading
one executes this file and the installed videor4 package, never a pickle shipped with the model."""

from mlflow.models import set_model

from videor4.pipeline.registry import RuminationModel

set_model(RuminationModel())
