"""Pre-training as one call: model and training settings from the config in, a TrainedModel out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

from components.data.sequences import SequenceDataset
from components.models.base import Recommender
from components.models.registry import build_model, model_classes, upgrade_config
from components.models.trained import TrainedModel
from components.settings import from_dict
from components.training.evaluation import resolve_device
from components.training.trainer import TrainConfig, TrainHooks, TrainResult, train

logger = logging.getLogger(__name__)


def model_config(data: SequenceDataset, settings: dict | None, seed: int = 0) -> tuple[str, dict]:
    """Architecture name and its config, with the sizes that come from the data (and the run's seed, for the
    initial weights, unless the model settings name their own) filled in.  ``repeat: true`` (or a dict of the
    head's options) wraps the named encoder in the repeat-aware head (architecture ``repeat``)."""
    settings = dict(settings or {})
    name = settings.pop("name", "sasrec")
    repeat = settings.pop("repeat", False)  # true, or the repeat head's own options (components.models.repeat)
    _, cfg_cls = model_classes(name)
    upgraded = upgrade_config(name, settings)
    if list(upgraded) != list(settings):
        logger.warning("model settings %s are now named %s (read under the new names)",
                       sorted(set(settings) - set(upgraded)), sorted(set(upgraded) - set(settings)))
    settings = upgraded
    cfg = from_dict(cfg_cls, {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "seed": seed, **settings},
                    where=f"steps.pretrain.parameters.model ({name})")
    if not repeat:
        return name, vars(cfg).copy()
    from components.models.repeat import RepeatAwareConfig

    options = repeat if isinstance(repeat, dict) else {}
    head = from_dict(RepeatAwareConfig, {"n_items": data.n_items, "n_behaviors": data.n_behaviors,
                                         "seed": cfg.seed, **options, "encoder": name,
                                         "encoder_config": vars(cfg).copy()},
                     where="steps.pretrain.parameters.model.repeat")
    return "repeat", vars(head).copy()


def code_key(architecture: str) -> str:
    """Digest of the source that decides what training computes: a checkpoint written by other code (a fixed
    model, a changed loss) must never be resumed as if it were this code's.  Covers the trainer, the batching,
    this module, the validation code (evaluation, ranking) and every file of ``components/models`` (encoders
    build on each other), read from disk so the
    digest does not depend on what happens to be imported."""
    import components.metrics.ranking
    import components.models
    import components.training.batches
    import components.training.evaluation
    import components.training.trainer

    model_classes(architecture)  # an unknown architecture fails here, before any training
    # evaluation and ranking decide early stopping, so which epoch a resumed run keeps.
    files = [Path(components.training.trainer.__file__), Path(components.training.batches.__file__), Path(__file__),
             Path(components.training.evaluation.__file__), Path(components.metrics.ranking.__file__)]
    files += sorted(Path(components.models.__file__).parent.glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
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
    hooks: TrainHooks | None = None,
) -> TrainedModel:
    name, mcfg = model_config(data, model_settings, seed)
    tcfg = from_dict(TrainConfig, {**(train_settings or {}), "seed": seed}, where="steps.pretrain.parameters.training")
    import torch

    torch.manual_seed(seed)
    model = build_model(name, mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    ckpt = None
    if checkpoint_root is not None:
        ckpt = Path(checkpoint_root) / checkpoint_key(data_key, name, mcfg, vars(tcfg))
    logger.info("pre-training %s (%s parameters) on %d warm users; checkpoints in %s", name, f"{n_params:,}",
                len(data.warm_users), ckpt)
    start = time.perf_counter()
    result = train_guided(model, data, tcfg, checkpoint_dir=ckpt, on_epoch_end=on_epoch_end, hooks=hooks)
    return TrainedModel(
        architecture=name, config=mcfg, state_dict=result.best_state, train_config=vars(tcfg).copy(),
        history=result.history, best_epoch=result.best_epoch,
        best_metric={"name": f"valid_{tcfg.valid_metric}", "value": result.best_metric},
        info={"n_parameters": n_params, "wall_seconds": time.perf_counter() - start, "resumed": result.resumed,
              "device": str(resolve_device(tcfg.device)), "stopped_early": result.stopped_early,
              **result.extra},
    )


def train_guided(model: Recommender, data: SequenceDataset, tcfg: TrainConfig, *,
                 checkpoint_dir: Path | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
                 hooks: TrainHooks | None = None) -> TrainResult:
    """``train``, or for a model with training stages (END4Rec's guided training) one ``train`` per stage.

    Each stage trains only its modules (``model.set_stage``) for its own epochs (``model.training_stages()``), keeps
    its best epoch by validation, and hands that state to the next; epochs are numbered on across stages (the
    record says which stage) and each stage checkpoints in its own folder, so a killed run resumes in its stage.
    """
    stages = model.training_stages()
    if stages is None:
        return train(model, data, tcfg, checkpoint_dir=checkpoint_dir, on_epoch_end=on_epoch_end, hooks=hooks)
    offset, history, result, per_stage = 0, [], None, {}
    for stage, epochs in enumerate(stages, start=1):
        if epochs == 0:
            continue
        model.set_stage(stage)
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("guided training, stage %d: %d epochs, %s trainable parameters", stage, epochs, f"{n_trainable:,}")

        def log_epoch(epoch: int, record: dict, _offset: int = offset, _stage: int = stage) -> None:
            if on_epoch_end is not None:
                on_epoch_end(_offset + epoch, {**record, "stage": _stage})

        stage_dir = Path(checkpoint_dir) / f"stage{stage}" if checkpoint_dir is not None else None
        cfg = dataclasses.replace(tcfg, epochs=epochs)
        result = train(model, data, cfg, checkpoint_dir=stage_dir, on_epoch_end=log_epoch, hooks=hooks)
        history += [{**h, "epoch": offset + h["epoch"], "stage": stage} for h in result.history]
        per_stage[f"stage{stage}_best_metric"] = result.best_metric
        per_stage[f"stage{stage}_trainable_parameters"] = n_trainable
        last_best = offset + result.best_epoch
        offset += len(result.history)
    model.set_stage(len(stages))  # the last stage uses every module: the trained model serves in it
    if result is None:
        return train(model, data, dataclasses.replace(tcfg, epochs=0), on_epoch_end=on_epoch_end)
    return dataclasses.replace(result, history=history, best_epoch=last_best,
                               extra={**result.extra, "stages": per_stage})
