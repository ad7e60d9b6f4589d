"""Batches, the training loop and evaluation for sequential recommenders (plain torch; no ZenML)."""

from components.training.batches import EvalBatch, eval_batches, training_batches, training_users
from components.training.evaluation import evaluate, resolve_device
from components.training.trainer import (
    TrainConfig,
    TrainResult,
    load_checkpoint,
    save_checkpoint,
    train,
)

__all__ = [
    "EvalBatch", "TrainConfig", "TrainResult", "eval_batches", "evaluate",
    "load_checkpoint", "resolve_device", "save_checkpoint", "train",
    "training_batches", "training_users",
]
