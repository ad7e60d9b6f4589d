"""The daily refresh's steps: align fresh data to the champion's vocabulary, then re-tune the champion's head.

``retune_head`` (the refresh's default, ``tuning: none``) re-tunes a small head of the champion's pre-trained
SASRec/EBM (last block + final LayerNorm, everything else frozen; components/training/refresh.py); with a prompt
tuning method the refresh uses ``load_base`` and ``prompt_tune`` (steps/prompt_tune.py) instead."""

import uuid
from typing import Annotated, Optional

from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

import components.training.refresh as refresh
from components.data.clean import CleanResult
from components.data.sequences import SequenceDataset
from components.models.trained import TrainedModel
from components.registry import names, versions
from components.settings import settings_dict
from components.tracking import mlflow_log
from components.training import config_schema as schema
from steps._common import TRACKER, cache_on_code


def _fresh_every_run() -> str:
    """Never cached (a YAML ``enable_cache: true`` would override ``enable_cache=False``): the champion may have
    moved since the last run."""
    return uuid.uuid4().hex


@step(experiment_tracker=TRACKER, enable_cache=False, cache_policy=CachePolicy(cache_func=_fresh_every_run))
def align_vocab(clean_interactions: CleanResult, dataset: str, model_name: Optional[str] = None) -> tuple[
    Annotated[CleanResult, "aligned_interactions"],
    Annotated[dict, "champion_base"],
]:
    """Map the cleaned fresh data onto the current champion's item and behavior vocabulary, dropping what it does
    not know; fails if there is no champion yet (run the training pipeline first).  ``model_name``: the
    registered name (the pipeline's; default mbprompt-<dataset>)."""
    base = versions.load_version(model_name or names.model_name(dataset))  # no version named: the champion
    aligned, report = refresh.align_to_vocab(clean_interactions, base.item_ids, base.behavior_names)
    mlflow_log.log_dict(report, "data/align_report.json")
    mlflow_log.log_params({"base_version": base.version})
    log_metadata({"base": base.describe(), "align": report})
    return aligned, base.describe()


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def retune_head(
    sequences: SequenceDataset,
    champion_base: dict,
    seed: int = 42,
    training: schema.RefreshTraining = None,
) -> Annotated[TrainedModel, "refreshed_model"]:
    """Load the champion's base (the version ``align_vocab`` aligned to) and re-tune its head on the fresh warm
    users; every other weight is verified unchanged."""
    training = settings_dict(training, schema.RefreshTraining)  # as configured
    mlflow_log.log_params({"training": training or {}, "seed": seed, "base_version": champion_base["version"]})
    base = versions.load_version(champion_base["name"], champion_base["version"])

    def log_epoch(epoch: int, metrics: dict) -> None:
        mlflow_log.log_metrics(metrics, step=epoch, prefix="epoch/")

    trained = refresh.refresh_model(base, sequences, training, seed=seed, on_epoch_end=log_epoch)
    mlflow_log.log_metrics({"n_parameters": trained.info["n_parameters"],
                            "n_trainable_parameters": trained.info["n_trainable_parameters"],
                            "retune_head_seconds": trained.info["wall_seconds"]})
    log_metadata({"base_version": base.version, "head": trained.lineage.tags["head"],
                  "n_trainable_parameters": trained.info["n_trainable_parameters"]})
    return trained
