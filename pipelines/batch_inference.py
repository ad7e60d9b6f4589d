"""ingest -> validate -> clean -> recommend_all: top-K for every user from a registered version, as Parquet.

    zenml pipeline run pipelines.batch_inference.batch_inference_pipeline -c configs/batch_inference.quickstart.yaml

The data steps are the training pipeline's (same settings: served from ZenML's cache after a training run on the
same data); ``recommend_all`` loads the version ``registered_model`` names (``{name, version}``; default: the
champion of mbprompt-<dataset>) through the registry gateway and writes ``steps.recommend_all.parameters.
output_path``.  Fails in ``recommend_all`` when there is no champion yet: run the training pipeline first.
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from steps import clean, fingerprint_input, ingest, recommend_all, validate


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def batch_inference_pipeline(dataset: str, raw_path: str, mapping: Optional[dict] = None,
                             registered_model: Optional[dict] = None) -> None:
    # ---- data: every user's events, as the training pipeline cleans them ----------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    report, _ = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping)
    cleaned = clean(interactions, after=report)
    # ---- recommendations ----------------------------------------------------------------------------------------
    recommend_all(cleaned, interactions, profiles, dataset=dataset, registered_model=registered_model)
