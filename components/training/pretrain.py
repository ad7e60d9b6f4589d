"""Pre-training as one call: model and training settings from the config in, a TrainedModel out."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

from components.data.sequences import SequenceDataset
from components.models.trained import TrainedModel, model_classes
from components.settings import from_dict
from components.training.evaluation import resolve_device
from components.training.trainer import TrainConfig, train

logger = logging.getLogger(__name__)


def model_config(data: SequenceDataset, settings: dict | None, seed: int = 0) -> tuple[str, dict]:
    """Architecture name and its config, with the sizes that come from the data (and the run's seed, for the
    initial weights, unless the model settings name their own) filled in."""
    settings = dict(settings or {})
    name = settings.pop("name", "sasrec")
    _, cfg_cls = model_classes(name)
    cfg = from_dict(cfg_cls, {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "seed": seed, **settings},
                    where=f"steps.pretrain.parameters.model ({name})")
    return name, vars(cfg).copy()


def code_key(architecture: str) -> str:
    """Digest of the source that decides what training computes: a checkpoint written by other code (a fixed
    model, a changed loss) must never be resumed as if it were this code's."""
    import inspect
    import sys

    import components.training.batches
    import components.training.trainer

    model_cls, _ = model_classes(architecture)
    modules = {components.training.trainer, components.training.batches, sys.modules[model_cls.__module__]}
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def checkpoint_key(data_key: str, name: str, model_cfg: dict, train_cfg: dict) -> str:
    blob = json.dumps([data_key, name, model_cfg, train_cfg, code_key(name)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def pretrain_model(
    data: SequenceDataset,
    model_settings: dict | None,
    train_settings: dict | None,
    *,
    seed: int,
    checkpoint_root: Path | None = None,
    data_key: str = "",
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> TrainedModel:
    name, mcfg = model_config(data, model_settings, seed)
    tcfg = from_dict(TrainConfig, {**(train_settings or {}), "seed": seed}, where="steps.pretrain.parameters.training")
    model_cls, cfg_cls = model_classes(name)
    import torch

    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**mcfg))
    n_params = sum(p.numel() for p in model.parameters())
    ckpt = None
    if checkpoint_root is not None:
        ckpt = Path(checkpoint_root) / checkpoint_key(data_key, name, mcfg, vars(tcfg))
    logger.info("pre-training %s (%s parameters) on %d warm users; checkpoints in %s", name, f"{n_params:,}",
                len(data.warm_users), ckpt)
    start = time.perf_counter()
    result = train(model, data, tcfg, checkpoint_dir=ckpt, on_epoch_end=on_epoch_end)
    return TrainedModel(
        architecture=name, config=mcfg, state_dict=result.best_state, train_config=vars(tcfg).copy(),
        history=result.history, best_epoch=result.best_epoch,
        best_metric={"name": f"valid_{tcfg.valid_metric}", "value": result.best_metric},
        info={"n_parameters": n_params, "wall_seconds": time.perf_counter() - start, "resumed": result.resumed,
              "device": str(resolve_device(tcfg.device)), "stopped_early": result.stopped_early},
    )
