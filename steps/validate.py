from typing import Annotated, Optional

import pyarrow as pa
from zenml import log_metadata, save_artifact, step

import components.data.drift as data_drift
import components.data.validation as validation
from components.data import config_schema as schema
from components.data import prepare
from components.registry import names, store
from components.settings import settings_dict
from components.tracking import mlflow_log
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def validate(
    interactions: pa.Table,
    profiles: pa.Table,
    dataset: str,
    raw_path: str,
    mapping: Optional[dict] = None,
    rules: schema.ValidateRules = None,
    drift: schema.Drift = None,
    model_name: Optional[str] = None,
) -> tuple[
    Annotated[validation.ValidationReport, "validation_report"],
    Annotated[dict, "data_profile"],
]:
    """Check the tables with Great Expectations; stop the pipeline before training if they fail.  Profile the
    data (REGISTER stores the profile with the model) and, with ``drift.mode`` warn or fail, compare it with
    the current champion's training data profile.  A cached run of this step replays an earlier verdict: configs
    that turn the gate on set ``enable_cache: false`` on it (configs/training.k8s.yaml)."""
    rules, drift = settings_dict(rules, schema.ValidateRules), settings_dict(drift, schema.Drift)
    gate = data_drift.DriftConfig.from_dict(drift, where="steps.validate.parameters.drift")
    report = prepare.validate(interactions, profiles, dataset, raw_path, mapping=mapping, rules=rules)
    mlflow_log.log_dict(report.to_json(), "data/validation.json")
    mlflow_log.log_text(report.to_markdown(), "data/validation.md")
    if not report.success:
        # A failing step stores no outputs: keep the report visible in the dashboard all the same.
        save_artifact(report, name="validation_report_failed")
        report.raise_for_failure()

    profile = data_drift.profile_data(interactions, sketch_k=gate.sketch_k, source=raw_path)
    champion_profile = store.champion_profile(model_name or names.model_name(dataset)) if gate.compares else None
    decision = data_drift.drift_gate(gate, profile, champion_profile, current_source=raw_path)
    if decision.report is not None:
        mlflow_log.log_dict(decision.report.to_json(), "data/drift.json")
        mlflow_log.log_text(decision.report.to_markdown(), "data/drift.md")
    if decision.mode != "off":
        log_metadata({"drift": decision.metadata()})
    if decision.blocks:
        save_artifact(decision.report.to_json(), name="drift_report_failed")
        raise data_drift.DataDriftError(decision.report.failure_message())
    return report, profile
