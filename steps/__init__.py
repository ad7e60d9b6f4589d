"""Thin ZenML steps: each reads like a sentence that calls components."""

import materializers  # noqa: F401  (registers our materializers)
from steps.batch_inference import recommend_all
from steps.clean import clean
from steps.evaluate import evaluate
from steps.fingerprint import fingerprint_input
from steps.ingest import ingest
from steps.pretrain import pretrain
from steps.prompt_tune import load_base, prompt_tune
from steps.refresh import align_vocab, retune_head
from steps.register import register
from steps.split import split
from steps.validate import validate

__all__ = ["fingerprint_input", "ingest", "validate", "clean", "split", "pretrain", "load_base", "prompt_tune", "evaluate", "register",
           "align_vocab", "retune_head", "recommend_all"]
