"""The daily tier: ingest -> validate -> clean -> align_vocab -> split -> retune_head -> evaluate -> register.

Re-uses the champion's pre-trained base instead of pre-training: ``align_vocab`` maps the fresh data onto the
champion's item vocabulary (unknown items dropped), ``retune_head`` re-tunes the champion on it, and the same
evaluate and register steps follow (the new version gets the tag ``base_version``).  By default (``tuning: none``)
``retune_head`` re-tunes a small head of the champion's SASRec/EBM on the fresh warm users (last block and final
LayerNorm; components/training/refresh.py).  With ``tuning: cpl`` (or another method of components/tuning), the
champion is the frozen base of that method instead, tuned on the fresh data's cold users and registered as
``mbprompt-<dataset>-<method>`` naming the champion version as its base.  Fails in ``align_vocab`` when there is no
champion yet: run ``pipelines.training.training_pipeline`` first.

    zenml pipeline run pipelines.prompt_refresh.prompt_refresh_pipeline -c configs/prompt_refresh.quickstart.yaml
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from components.data import config_schema as data_schema
from components.registry.names import resolve_model_name
from components.training import config_schema as train_schema
from components.tuning import config_schema as tune_schema
from steps import (align_vocab, clean, evaluate, fingerprint_input, ingest, load_base, prompt_tune, register,
                   retune_head, split, validate)


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def prompt_refresh_pipeline(dataset: data_schema.Dataset, raw_path: str, seed: train_schema.Seed = 42,
                            mapping: data_schema.Mapping = None, tuning: tune_schema.Tuning = "none",
                            model_name: Optional[str] = None) -> None:
    mapping = data_schema.pipeline_mapping(dataset, mapping)  # typed parameters: checked before any step
    # The registered name whose champion is refreshed (default mbprompt-<dataset>; required for the generic reader).
    name = resolve_model_name(dataset, model_name)
    # ---- data ------------------------------------------------------------------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    report, data_profile = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping,
                                    model_name=name)
    cleaned = clean(interactions, after=report)
    aligned, champion_base = align_vocab(cleaned, dataset=dataset, model_name=name)
    sequences = split(aligned, profiles, seed=seed, dataset=dataset)
    # ---- model: the champion's base, re-tuned ---------------------------------------------------------------
    base = None
    if tuning == "none":
        model = retune_head(sequences, champion_base, seed=seed)
    else:  # a prompt-tuning method on the fresh cold users, from the champion's frozen (or tuned) base
        base = load_base(sequences, base=champion_base)
        model = prompt_tune(base, sequences, seed=seed, tuning=tuning)
    evaluation = evaluate(model, sequences, dataset=dataset, base_model=base)
    # ---- deployment ------------------------------------------------------------------------------------------
    register(model, sequences, evaluation, dataset=dataset, data_profile=data_profile, base_model=base,
             model_name=name)
