"""The daily tier: ingest -> validate -> clean -> align_vocab -> split -> retune_head -> evaluate -> register.

Re-uses the champion's pre-trained base instead of pre-training: ``align_vocab`` maps the fresh data onto the
champion's item vocabulary (unknown items dropped), ``retune_head`` re-tunes the champion on it, and the same
evaluate and register steps follow (the new version gets the tag ``base_version``).  Interim: prompt tuning
(issue 4) has not landed, so ``retune_head`` re-tunes a small head of the champion's SASRec/EBM (last block and
final LayerNorm; components/training/refresh.py).  Fails in ``align_vocab`` when there is no champion yet: run
``pipelines.training.training_pipeline`` first.

    zenml pipeline run pipelines.prompt_refresh.prompt_refresh_pipeline -c configs/prompt_refresh.quickstart.yaml
"""

from typing import Optional

from zenml import pipeline
from zenml.enums import ExecutionMode

from steps import align_vocab, clean, evaluate, fingerprint_input, ingest, retune_head, register, split, validate


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def prompt_refresh_pipeline(dataset: str, raw_path: str, seed: int = 42, mapping: Optional[dict] = None) -> None:
    # ---- data ------------------------------------------------------------------------------------------------
    input_fingerprint = fingerprint_input(raw_path)
    interactions, profiles, _ = ingest(dataset=dataset, raw_path=raw_path, input_fingerprint=input_fingerprint,
                                       mapping=mapping)
    report, data_profile = validate(interactions, profiles, dataset=dataset, raw_path=raw_path, mapping=mapping)
    cleaned = clean(interactions, after=report)
    aligned, champion_base = align_vocab(cleaned, dataset=dataset)
    sequences = split(aligned, profiles, seed=seed)
    # ---- model: the champion's base, re-tuned ---------------------------------------------------------------
    model = retune_head(sequences, champion_base, seed=seed)
    evaluation = evaluate(model, sequences, dataset=dataset)
    # ---- deployment ------------------------------------------------------------------------------------------
    register(model, sequences, evaluation, dataset=dataset, data_profile=data_profile)
