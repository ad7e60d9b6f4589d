"""ingest -> validate -> clean -> recommend_all: top-K for every user from a registered version, as Parquet.

    zenml pipeline run pipelines.batch_inference.batch_inference_pipeline -c configs/batch_inference.quickstart.yaml

The data steps are the training pipeline's (same settings: served from ZenML's cache after a training run on the
same data); ``recommend_all`` loads the version ``registered_model`` names (``{name, version}``; default: the
champion of the ``model_name`` parameter, itself mbprompt-<dataset> by default) through the registry gateway and writes ``steps.recommend_all.parameters.
output_path``.  Fails in ``recommend_all`` when there is no champion yet: run the training pipeline first.
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from components.data import config_schema as data_schema
from components.registry.names import resolve_model_name
from components.settings import settings_dict
from components.training import config_schema as train_schema
from steps import clean, fingerprint_input, ingest, recommend_all, validate


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def batch_inference_pipeline(dataset: data_schema.Dataset, raw_path: str, mapping: data_schema.Mapping = None,
                             registered_model: train_schema.RegisteredModel = None,
                             model_name: Optional[str] = None) -> None:
    # Typed parameters: checked before any step.
    mapping = data_schema.pipeline_mapping(dataset, mapping)
    registered_model = settings_dict(registered_model, train_schema.RegisteredModel)
    # The champion of model_name (default mbprompt-<dataset>) unless registered_model names a version.
    name = resolve_model_name(dataset, model_name)
    wanted = {"name": name, **(registered_model or {})}
    # ---- data: every user's events, as the training pipeline cleans them ----------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    report, _ = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping,
                         model_name=name)  # as the training pipeline passes it: the same cache key
    cleaned = clean(interactions, after=report)
    # ---- recommendations ----------------------------------------------------------------------------------------
    recommend_all(cleaned, interactions, profiles, dataset=dataset, registered_model=wanted)
