"""prompt_tune: tune the pre-trained encoder for cold-start users (``tuning: finetune | ppr_light | ppr_full |
cpl | pomrec | none``); every tuning run logs its efficiency beside the fine-tuning run on the same data."""

import uuid
from typing import Annotated

from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

import components.tuning.tune as tune
from components.data.sequences import SequenceDataset
from components.models.trained import TrainedModel
from components.registry import store, versions
from components.settings import settings_dict
from components.tracking import mlflow_log
from components.tuning import config_schema as schema
from steps._common import TRACKER, cache_on_code
from steps._runs import track_training_run


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def prompt_tune(
    pretrained_model: TrainedModel,
    sequences: SequenceDataset,
    seed: int = 42,
    tuning: schema.Tuning = "none",
    settings: schema.Settings = None,
    training: schema.Training = None,
) -> Annotated[TrainedModel, "tuned_model"]:
    """Tune on the cold tuning users and keep the epoch that ranks their last targets best; ``none`` passes the
    pre-trained model on unchanged."""
    settings, training = settings_dict(settings, schema.Settings), settings_dict(training, schema.Training)
    if tuning == "none":
        return pretrained_model
    track_training_run("tuning")  # checkpoints name this run (a killed one is closed on resume); data; system metrics
    digest = tune.data_digest(sequences)
    mlflow_log.log_params({"tuning": tuning, "tuning_settings": settings or {}, "training": training or {},
                           "seed": seed, "data_digest": digest, "base_architecture": pretrained_model.architecture})

    def log_epoch(epoch: int, metrics: dict) -> None:
        mlflow_log.log_metrics(metrics, step=epoch, prefix="epoch/")

    tuned = tune.tune_model(pretrained_model, sequences, tuning, settings, training, seed=seed, on_epoch_end=log_epoch)
    reference = store.finetune_reference(tuning, digest, pretrained_model.architecture)
    efficiency = tune.efficiency(tuned, reference)
    mlflow_log.log_metrics(efficiency)
    mlflow_log.log_dict({**efficiency, "finetune_reference_run": reference and reference["run_id"],
                         "tuned_parameter_names": tuned.info["tuned_parameter_names"]}, "tuning/efficiency.json")
    log_metadata({"tuning": tuning, **efficiency})
    return tuned


def _fresh_every_run() -> str:
    """Never cached (a YAML ``enable_cache: true`` overrides ``enable_cache=False``): with no version named, the
    champion alias may have moved since the last run."""
    return uuid.uuid4().hex


@step(experiment_tracker=TRACKER, enable_cache=False, cache_policy=CachePolicy(cache_func=_fresh_every_run))
def load_base(sequences: SequenceDataset, base: dict) -> Annotated[TrainedModel, "pretrained_model"]:
    """The registered pre-trained version ``base`` names (``{name, version}``; no version: the champion), so
    tuning can run again without pre-training again."""
    model = tune.base_to_tune(versions.load_version(base["name"], base.get("version")), sequences)
    mlflow_log.log_params({"base_model": model.lineage.source["name"],
                           "base_version": model.lineage.source["version"]})
    return model
