"""ingest -> validate -> clean -> split -> pretrain -> evaluate -> register.

Run it with ``zenml pipeline run pipelines.training.training_pipeline -c configs/<dataset>.yaml``.  Every setting
lives in the YAML; this file only wires steps.
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from steps import clean, evaluate, fingerprint_input, ingest, pretrain, register, split, validate


# Fail fast: the first failing step stops the run and its own error (file, column, count) is what surfaces.
@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def training_pipeline(dataset: str, raw_path: str, seed: int = 42, mapping: Optional[dict] = None) -> None:
    # ---- data ------------------------------------------------------------------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    # validate also profiles the data (register stores the profile with the model) and, with `drift: {mode: warn|fail}`,
    # gates the run on how far the data moved from the champion's training data.
    report, data_profile = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping)
    cleaned = clean(interactions, after=report)
    sequences = split(cleaned, profiles, seed=seed)
    # ---- model -----------------------------------------------------------------------------------------------
    model = pretrain(sequences, seed=seed)
    evaluation = evaluate(model, sequences, dataset=dataset)
    # ---- deployment --------------------------------------------------------------------------------------------
    register(model, sequences, evaluation, dataset=dataset, data_profile=data_profile)
