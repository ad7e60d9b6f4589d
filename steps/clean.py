from typing import Annotated

import pyarrow as pa
from zenml import log_metadata, step

import components.data.clean as cleaning
from components.data import config_schema as schema
from components.data import prepare
from components.settings import settings_dict
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def clean(interactions: pa.Table, rules: schema.Clean = None) -> Annotated[cleaning.CleanResult, "clean_interactions"]:
    """Drop duplicates and out-of-window rows, apply the k-core filter, remap ids, sort by time."""
    rules = settings_dict(rules, schema.Clean)  # the rules as the config gives them
    result = prepare.clean(interactions, rules)
    mlflow_log.log_params(rules or {}, prefix="clean.")
    mlflow_log.log_dict(result.report, "data/clean_report.json")
    log_metadata({"rows_in": result.report["rows_in"], "rows_out": result.report["rows_out"]})
    return result
