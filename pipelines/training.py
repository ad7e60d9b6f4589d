"""ingest -> validate -> clean -> split -> pretrain -> prompt_tune -> evaluate -> register.

Run it with ``zenml pipeline run pipelines.training.training_pipeline -c configs/<dataset>.yaml``.  Every setting
lives in the YAML; this file only wires steps.
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from components.data import config_schema as data_schema
from components.registry.names import resolve_model_name
from components.settings import settings_dict
from components.training import config_schema as train_schema
from components.tuning import config_schema as tune_schema
from steps import clean, evaluate, fingerprint_input, ingest, load_base, pretrain, prompt_tune, register, split, validate


# Fail fast: the first failing step stops the run and its own error (file, column, count) is what surfaces.
@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def training_pipeline(dataset: data_schema.Dataset, raw_path: str, seed: train_schema.Seed = 42,
                      mapping: data_schema.Mapping = None, tuning: tune_schema.Tuning = "none",
                      base_model: train_schema.BaseModelRef = None, model_name: Optional[str] = None) -> None:
    # Typed parameters: ZenML checks them before any step (so are the steps' own, components/*/config_schema.py).
    mapping = data_schema.pipeline_mapping(dataset, mapping)
    base_model = settings_dict(base_model, train_schema.BaseModelRef)
    # The registered name (default mbprompt-<dataset>; required for the generic reader): an error before any step.
    name = resolve_model_name(dataset, model_name)
    # ---- data ------------------------------------------------------------------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    # validate also profiles the data (register stores the profile with the model) and, with `drift: {mode: warn|fail}`,
    # gates the run on how far the data moved from the champion's training data.
    report, data_profile = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping,
                                    model_name=name)
    cleaned = clean(interactions, after=report)
    sequences = split(cleaned, profiles, seed=seed, dataset=dataset)
    # ---- model -----------------------------------------------------------------------------------------------
    # Pre-train on warm users, or start from a registered pre-trained version (`base_model: {name, version}`).
    pretrained = pretrain(sequences, seed=seed) if base_model is None else load_base(sequences, base=base_model)
    base = None
    model = pretrained
    if tuning != "none":
        # Tune for cold-start users (`tuning: finetune | ppr_light | ppr_full | cpl | pomrec`); evaluate and register
        # then also see the pre-trained base (the "pre-train only" row, the tuned version's lineage).
        model = prompt_tune(pretrained, sequences, seed=seed, tuning=tuning)
        base = pretrained
    evaluation = evaluate(model, sequences, dataset=dataset, base_model=base)
    # ---- deployment --------------------------------------------------------------------------------------------
    register(model, sequences, evaluation, dataset=dataset, data_profile=data_profile, base_model=base,
             model_name=name)
