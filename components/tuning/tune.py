"""Tuning as one call: a pre-trained model and the ``tuning:`` settings in, a tuned TrainedModel out.

The tuned model trains on the cold **tuning** users' sequences (``data.cold_tune_users``, everything before each
one's last target event) and selects its epoch on their last target events (``cold_valid``); the cold **test**
users are never seen.  Methods with a frozen base (``ppr_light``, ``cpl``, ``pomrec``) are checked after tuning:
every base tensor must be bit-identical to the pre-trained one, else this raises.  The batches are the trainer's
next-item windows plus each user's zero-shot example, single-event users included (``train(...,
zero_shot_examples=True)``, see :func:`components.training.batches.training_batches`).

Efficiency figures go into ``info``: total and tuned parameter counts, the tuned share, the tuned parameters
as a share of what full fine-tuning of the same base on the same data tunes (``tuned_vs_finetune``), and the
tuning wall time.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import torch

from components.data.sequences import SequenceDataset
from components.models.registry import ARCHITECTURES, build_tuned, model_classes
from components.models.trained import Lineage, TrainedModel
from components.models.tuned.methods import FROZEN_BASE, METHODS, TunedRecommender, TuningConfig, method_config
from components.models.tuned.profiles import select_fields
from components.settings import from_dict
from components.training.batches import training_users
from components.training.evaluation import resolve_device
from components.training.refresh import ChampionBase
from components.training.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

#: Training defaults for tuning (a config's ``training:`` overrides them): cold users' tuning split, selected on
#: their validation targets.
TUNING_TRAIN_DEFAULTS = {"valid_set": "cold_valid", "epochs": 20, "patience": 5}


def takes_prompts(architecture: str) -> bool:
    """Whether prompt tuning can wrap this registered architecture: a NextItemEncoder with its own ``run_stack``
    (SASRec, EBM, END4Rec; not the repeat head, whose encoder is wrapped, nor PoMRec as a model of its own)."""
    from components.models.base import NextItemEncoder

    cls = model_classes(architecture)[0]
    return issubclass(cls, NextItemEncoder) and cls.run_stack is not NextItemEncoder.run_stack


def tuning_config(method: str, base: TrainedModel, data: SequenceDataset, settings: dict | None,
                  seed: int) -> TuningConfig:
    """The method's config for ``base`` on ``data`` (profile fields and vocabularies read from the data)."""
    if method not in METHODS:
        raise ValueError(f"tuning: unknown method {method!r}; use one of {list(METHODS)} (or none)")
    if base.is_tuned:
        raise ValueError(f"tuning: the base is already tuned ({base.method} over {base.architecture}); tune a "
                         "pre-trained encoder")
    if not takes_prompts(base.architecture):
        raise ValueError(f"tuning: the base {base.architecture!r} has no encoder stack to put prompts into; tune a "
                         f"pre-trained {', '.join(a for a in ARCHITECTURES if takes_prompts(a))} model")
    settings = dict(settings or {})
    fields, vocab = select_fields(data, settings.pop("profile_fields", None))
    return method_config(method, {
        "base_architecture": base.architecture, "base_config": dict(base.config),
        "n_items": int(base.config["n_items"]), "target_behaviors": list(data.target_behaviors),
        "profile_fields": fields, "profile_vocab": vocab, "seed": seed, **settings}, where=f"tuning ({method})")


def count_parameters(model: TunedRecommender) -> dict:
    total = sum(p.numel() for p in model.parameters())
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"n_parameters": total, "n_tuned_parameters": tuned, "tuned_share": tuned / max(total, 1)}


def tune_model(base: TrainedModel, data: SequenceDataset, method: str, settings: dict | None,
               train_settings: dict | None, *, seed: int,
               on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainedModel:
    if data.n_items != int(base.config["n_items"]):
        raise ValueError(f"tuning: data has {data.n_items} items, the pre-trained model {base.config['n_items']}")
    cfg = tuning_config(method, base, data, settings, seed)
    tcfg = from_dict(TrainConfig, {**TUNING_TRAIN_DEFAULTS, **(train_settings or {}), "seed": seed},
                     where="steps.prompt_tune.parameters.training")
    model = build_tuned(cfg)
    model.base.load_state_dict(base.state_dict)
    frozen = {}
    if method in FROZEN_BASE:
        frozen = {k: v.detach().clone() for k, v in model.base.state_dict().items()}
    counts = count_parameters(model)
    finetune = method_config("finetune", cfg.to_dict(), strict=False)  # the same base, data and shared settings
    finetune_counts = count_parameters(build_tuned(finetune))
    logger.info("tuning %s over %s: %s of %s parameters tuned (%.2f%%) on %d cold tuning users", method,
                base.architecture, f"{counts['n_tuned_parameters']:,}", f"{counts['n_parameters']:,}",
                100 * counts["tuned_share"], len(data.cold_tune_users))
    if len(data.cold_tune_users) == 0:
        raise ValueError("tuning: the split has no cold tuning users (split.cold_mode / cold_threshold)")
    if len(training_users(data, data.cold_tune_users, zero_shot=True)) == 0:
        raise ValueError("tuning: no cold tuning user has a training event to learn from")
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = train(model, data, tcfg, users=data.cold_tune_users, on_epoch_end=on_epoch_end, zero_shot_examples=True)
    seconds = time.perf_counter() - start
    model.cpu()
    if frozen:
        now = model.base.state_dict()
        changed = [k for k, v in frozen.items() if not torch.equal(v, now[k].cpu())]
        if changed:
            raise RuntimeError(f"tuning {method}: frozen base tensors changed: {changed[:10]}")
    state = {k: v.detach().cpu().clone() for k, v in result.best_state.items()}
    info = {**counts, "n_finetune_parameters": finetune_counts["n_tuned_parameters"],
            "tuned_vs_finetune": counts["n_tuned_parameters"] / max(finetune_counts["n_tuned_parameters"], 1),
            "wall_seconds": seconds,
            # Training time of the median epoch (validation excluded): every epoch of a method does the same work,
            # so this compares methods at the same epochs budget whatever early stopping did.
            "seconds_per_epoch": statistics.median(h["seconds"] for h in result.history) if result.history else 0.0,
            "device": str(resolve_device(tcfg.device)), "stopped_early": result.stopped_early,
            "method": method, "base_architecture": base.architecture, "base_frozen_verified": bool(frozen),
            "tuned_parameter_names": model.tuned_parameter_names() if method in FROZEN_BASE else ["(all)"],
            "base_info": {"registry": base.lineage.source, "n_parameters": base.info.get("n_parameters")}}
    return TrainedModel(
        architecture=base.architecture, method=method, config=cfg.to_dict(), state_dict=state,
        train_config=tcfg.to_dict(), history=result.history, best_epoch=result.best_epoch,
        best_metric={"name": f"{tcfg.valid_set}_{tcfg.valid_metric}", "value": result.best_metric}, info=info)


def data_digest(data: SequenceDataset) -> str:
    """Content digest of the split (events, users' roles, targets): "the same data" for efficiency ratios."""
    import hashlib

    h = hashlib.sha256()
    for a in (data.offsets, data.items, data.behaviors, data.train_end, data.cold_tune_users, data.cold_test_users,
              data.profiles):
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def base_to_tune(base: ChampionBase, data: SequenceDataset) -> TrainedModel:
    """A registered pre-trained version (loaded by the registry gateway, ``components.registry.versions``) as the
    base to tune, checked against the data's item and behavior vocabularies (the model scores its own contiguous
    ids).  Its ``lineage.source`` names the version, so registering the tuned model reuses it."""
    if base.method is not None:
        raise ValueError(f"{base.name} v{base.version} is a tuned model ({base.method} over {base.architecture}); "
                         "name a pre-trained version")
    data_items = [str(x) for x in data.item_ids.tolist()]
    if base.item_ids != data_items:
        raise ValueError(f"{base.name} v{base.version} was trained on another item vocabulary "
                         f"({len(base.item_ids) - 1} items) than this run's data ({data.n_items}); tune on the data "
                         "it was trained on, or re-run the training pipeline")
    if list(base.behavior_names) != list(data.behavior_names):
        raise ValueError(f"{base.name} v{base.version} knows behaviors {base.behavior_names}, the data "
                         f"{data.behavior_names}")
    return TrainedModel(architecture=base.architecture, config=dict(base.config), state_dict=base.state_dict,
                        lineage=Lineage(source={"name": base.name, "version": base.version, "run_id": base.run_id}))


def efficiency(tuned: TrainedModel, reference: dict | None) -> dict:
    """The tuning run's efficiency figures: parameter counts and shares (of the model, of what fine-tuning tunes),
    wall time, time of the median epoch, and ``time_per_epoch_vs_finetune``: the median epoch's training time
    (validation excluded; early stopping makes epoch counts differ, an epoch's work does not) against the most
    recent fine-tuning run of the same base on the same data (``reference``, found by the registry gateway:
    ``components.registry.store.finetune_reference``; 1 for fine-tuning itself, absent when there is none)."""
    info = tuned.info
    figures = {k: info[k] for k in ("n_parameters", "n_tuned_parameters", "tuned_share", "n_finetune_parameters",
                                    "tuned_vs_finetune")}
    figures.update(tune_seconds=info["wall_seconds"], tune_seconds_per_epoch=info["seconds_per_epoch"])
    if tuned.method == "finetune":
        figures["time_per_epoch_vs_finetune"] = 1.0
    elif reference is not None:
        figures["time_per_epoch_vs_finetune"] = info["seconds_per_epoch"] / reference["tune_seconds_per_epoch"]
    return figures
