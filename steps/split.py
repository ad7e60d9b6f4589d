from typing import Annotated, Optional

import pyarrow as pa
from zenml import step

import components.data.split as splitting
from components.data.sequences import SequenceDataset
from components.settings import from_dict
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on


@step(experiment_tracker=TRACKER, cache_policy=cache_on(splitting))
def split(
    clean_interactions: splitting.CleanResult,
    profiles: pa.Table,
    seed: int = 42,
    settings: Optional[dict] = None,
) -> Annotated[SequenceDataset, "sequences"]:
    """Split warm from cold users, fix leave-one-out targets and the sampled negatives."""
    cfg = from_dict(splitting.SplitConfig, {**(settings or {}), "seed": seed}, where="steps.split.parameters.settings")
    data = splitting.build_sequences(clean_interactions, profiles, cfg)
    mlflow_log.log_params({k: v for k, v in vars(cfg).items()}, prefix="split.")
    mlflow_log.log_dict(data.meta, "data/split.json")
    return data
