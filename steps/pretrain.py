from typing import Annotated

from zenml import get_step_context, step
from zenml.client import Client

import components.training.pretrain as pretraining
from components.data.sequences import SequenceDataset
from components.models.trained import TrainedModel
from components.settings import settings_dict
from components.tracking import mlflow_log
from components.training import config_schema as schema
from steps._common import TRACKER, cache_on_code
from steps._runs import track_training_run


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def pretrain(
    sequences: SequenceDataset,
    seed: int = 42,
    model: schema.Model = None,
    training: schema.Training = None,
) -> Annotated[TrainedModel, "pretrained_model"]:
    """Pre-train the encoder on warm users, logging every epoch; resumes from the last checkpoint if killed."""
    model, training = settings_dict(model, schema.Model), settings_dict(training, schema.Training)  # as configured
    track_training_run("training")  # checkpoints name this run (a killed one is closed on resume); data; system metrics
    mlflow_log.log_params({"model": model or {}, "training": training or {}, "seed": seed})

    def log_epoch(epoch: int, metrics: dict) -> None:
        # Under "epoch/": the UI groups the curves, and they stay apart from evaluate's final figures.
        mlflow_log.log_metrics(metrics, step=epoch, prefix="epoch/")

    trained = pretraining.pretrain_model(
        sequences, model, training, seed=seed, on_epoch_end=log_epoch,
        checkpoint_root=Client().root / ".checkpoints" if Client().root else None,
        data_key=str(get_step_context().inputs["sequences"][0].id),
    )
    mlflow_log.log_metrics({"n_parameters": trained.info["n_parameters"], "pretrain_seconds": trained.info["wall_seconds"]})
    return trained
