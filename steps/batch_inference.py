"""Batch recommendations for every user: load a registered version, express each user's history in its ids,
write top-K per user as a Parquet dataset (components/serving/batch.py)."""

import uuid
from typing import Annotated, Optional

import pyarrow as pa
from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

from components.data.clean import CleanResult
from components.registry import names, versions
from components.serving import batch
from components.serving.ann import ApproximateIndex, IndexConfig
from components.serving.config_schema import Approximate
from components.settings import located, schema_type, settings_dict
from components.tracking import mlflow_log
from components.training.config_schema import RegisteredModel
from steps._common import TRACKER


def _fresh_every_run() -> str:
    """Never cached: the champion may have moved and the dataset is written outside ZenML's artifact store."""
    return uuid.uuid4().hex


@step(experiment_tracker=TRACKER, enable_cache=False, cache_policy=CachePolicy(cache_func=_fresh_every_run))
def recommend_all(
    clean_interactions: CleanResult,
    interactions: pa.Table,
    profiles: pa.Table,
    dataset: str,
    output_path: str,
    registered_model: RegisteredModel = None,
    k: located(schema_type(int, bounds={"ge": 1}), "steps.recommend_all.parameters.k") = 10,
    exclude_seen: located(Optional[schema_type(bool)], "steps.recommend_all.parameters.exclude_seen") = None,
    chunk_size: located(schema_type(int, bounds={"ge": 1}), "steps.recommend_all.parameters.chunk_size") = 10_000,
    approximate: Approximate = None,
) -> Annotated[dict, "batch_report"]:
    """Top-``k`` for every user of the data (users the cleaning dropped get the model's zero-shot answer) from
    the registered version ``registered_model`` names (``{name, version}``; default: the champion of
    mbprompt-<dataset>), written to ``output_path`` in part files of ``chunk_size`` users; history items are
    excluded as the model was evaluated unless ``exclude_seen`` says otherwise.  ``approximate`` (HNSW settings,
    ``{}`` for the defaults; needs the ann extra): approximate top-k from an index over the item table, its
    recall@k against exact measured on the first 2,000 users and logged (``batch_approximate_recall_at_<k>``)."""
    wanted = settings_dict(registered_model, RegisteredModel) or {}
    served = versions.load_served(wanted.get("name") or names.model_name(dataset), wanted.get("version"))
    model = served.recommender
    histories = batch.histories_from_clean(clean_interactions, model.item_ids, model.behavior_names,
                                           users=batch.all_users(interactions), profiles=profiles,
                                           profile_fields=model.profile_fields, profile_vocab=model.profile_vocab)
    index_settings = settings_dict(approximate, Approximate)
    index = None if index_settings is None else ApproximateIndex(model.model, IndexConfig(**index_settings))
    report = batch.batch_recommend(model, histories, output_path, model_name=served.name,
                                   model_version=served.version, k=k, exclude_seen=exclude_seen,
                                   chunk_size=chunk_size, index=index)
    mlflow_log.log_params({"model_name": served.name, "model_version": served.version, "k": k,
                           "exclude_seen": report.exclude_seen, "chunk_size": chunk_size, "output_path": output_path,
                           "approximate": index_settings if index_settings is not None else "exact"})
    mlflow_log.log_metrics(report.metrics())
    mlflow_log.log_dict(report.to_dict(), "batch/report.json")
    mlflow_log.log_dict({"rows": report.sample}, "batch/sample.json")
    log_metadata({"model": served.describe(), "users": report.users, "rows": report.rows,
                  "users_per_second": report.users_per_second, "histories": report.histories})
    return report.to_dict()
