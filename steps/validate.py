from typing import Annotated, Optional

import pyarrow as pa
from zenml import save_artifact, step

import components.data.validation as validation
from components.data.datasets import validation_config
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on


@step(experiment_tracker=TRACKER, cache_policy=cache_on(validation))
def validate(
    interactions: pa.Table,
    profiles: pa.Table,
    dataset: str,
    raw_path: str,
    mapping: Optional[dict] = None,
    rules: Optional[dict] = None,
) -> Annotated[validation.ValidationReport, "validation_report"]:
    """Check the tables with Great Expectations; stop the pipeline before training if they fail."""
    cfg = validation_config(dataset, rules, mapping)
    report = validation.validate_interactions(interactions, profiles, cfg, source=raw_path)
    mlflow_log.log_dict(report.to_json(), "data/validation.json")
    mlflow_log.log_text(report.to_markdown(), "data/validation.md")
    if not report.success:
        # A failing step stores no outputs: keep the report visible in the dashboard all the same.
        save_artifact(report, name="validation_report_failed")
        report.raise_for_failure()
    return report
