from typing import Annotated, Optional

import pyarrow as pa
from zenml import log_metadata, step

from components.data import config_schema as schema
from components.data import prepare
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def ingest(
    dataset: str,
    raw_path: str,
    input_fingerprint: str,
    mapping: Optional[dict] = None,
    max_malformed_fraction: schema.MaxMalformedFraction = 0.001,
) -> tuple[
    Annotated[pa.Table, "interactions"],
    Annotated[pa.Table, "profiles"],
    Annotated[dict, "ingest_report"],
]:
    """Read the raw logs into the canonical interactions and profile tables, skipping malformed rows."""
    result = prepare.ingest(dataset, raw_path, mapping=mapping, max_malformed_fraction=max_malformed_fraction)
    mlflow_log.log_params({"dataset": dataset, "raw_path": raw_path, "input_fingerprint": input_fingerprint[:16]})
    mlflow_log.log_dict(result.report, "data/ingest_report.json")
    log_metadata({"rows": result.interactions.num_rows, "profiles": result.profiles.num_rows})
    return result.interactions, result.profiles, result.report
