from typing import Annotated, Optional

import pyarrow as pa
from zenml import step

import components.data.split as splitting
from components.data import config_schema as schema
from components.data import prepare
from components.data.sequences import SequenceDataset
from components.settings import settings_dict
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def split(
    clean_interactions: splitting.CleanResult,
    profiles: pa.Table,
    seed: int = 42,
    settings: schema.Split = None,
    dataset: Optional[str] = None,
) -> Annotated[SequenceDataset, "sequences"]:
    """Split warm from cold users, fix leave-one-out targets and the sampled negatives (history items stay
    candidates or are excluded, per the dataset's ``history_items`` setting)."""
    cfg = prepare.split_config(seed, settings_dict(settings, schema.Split))
    data = prepare.split(clean_interactions, profiles, cfg, dataset=dataset)
    mlflow_log.log_params({k: v for k, v in vars(cfg).items()}, prefix="split.")
    mlflow_log.log_dict(data.meta, "data/split.json")
    return data
