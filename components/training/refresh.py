"""The daily refresh: re-tune a small head of the champion's pre-trained encoder on fresh data.

The daily pipeline's default (``tuning: none``; with a prompt-tuning method it runs components/tuning on the
champion's frozen base instead).  This module does the cheapest useful re-tune: it takes the champion's trained
encoder (SASRec or EBM; END4Rec builds on EBM), as the registry gateway loads it
(``components.registry.versions.load_version``), **freezes every parameter except a small "head"** and trains
only that head, with the same trainer as pre-training, on the fresh data's warm users for a few epochs.

The head (:func:`head_parameter_names`) is the **last block of the encoder stack plus the final LayerNorm**:
``blocks[-1]`` and ``ln_f`` in SASRec, ``layers[-1]`` and ``ln_f`` in EBM / END4Rec.  Those are the modules every
encoder in ``components/models`` has (the stack is the first ``nn.ModuleList`` named ``blocks`` or ``layers``).
Everything else stays bit-identical to the champion: the item table (which is also the output layer, so the
catalogue's geometry does not move), behavior and position embeddings, and every earlier block.
:func:`retune_head` checks that after training and raises if any frozen tensor changed.

Item vocabulary.  The model scores its own contiguous item ids, so fresh data must be expressed in the champion's
id space: :func:`align_to_vocab` maps the cleaned fresh interactions through the champion's stored id list
(``items.json`` of the registered version, original id of each contiguous id) and its behavior names, **drops
events on items (or behaviors) the champion does not know** (the served model skips unknown items the same way,
``components/serving/recommender.py``) and reports how many were dropped.  New items therefore reach the model
only through the weekly full training run.

Nothing here imports ZenML or MLflow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from components.data.clean import CleanResult, vocabulary_codes
from components.data.schema import BEHAVIOR, ITEM, USER, check_canonical
from components.data.sequences import SequenceDataset
from components.models.base import NextItemEncoder
from components.models.trained import Lineage, TrainedModel
from components.settings import from_dict
from components.training.evaluation import resolve_device
from components.training.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

#: The tag a refreshed version carries: the registered version of the champion whose base it re-tuned.
BASE_VERSION_TAG = "base_version"


@dataclass
class ChampionBase:
    """A registered version as data: its trained model, the vocabularies it was registered with (what
    ``components.serving.recommender.write_bundle`` stored) and where it is registered.  The registry gateway
    builds it (``components.registry.versions.load_version``); the refresh and prompt tuning start from it."""

    name: str
    version: str
    run_id: str
    model: TrainedModel
    behavior_names: list[str]
    target_behaviors: list[str]
    item_ids: list[str]  # original id of each contiguous id; index 0 = padding ("")
    tags: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.model.architecture

    @property
    def method(self) -> str | None:
        """The tuning method of a tuned version (None: a pre-trained one)."""
        return self.model.method

    @property
    def config(self) -> dict:
        return self.model.config

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "architecture": self.architecture,
                "n_items": len(self.item_ids) - 1, "behavior_names": list(self.behavior_names)}


# ---- vocabulary ---------------------------------------------------------------------------------------------------
def align_to_vocab(clean: CleanResult, item_ids: list[str], behavior_names: list[str]) -> tuple[CleanResult, dict]:
    """Re-express cleaned fresh interactions in a model's id space.

    ``item_ids`` is the model's list of original item ids (index 0 = padding), ``behavior_names`` its behavior
    names in code order.  Events on unknown items or behaviors are dropped; users left without events are dropped
    and the rest renumbered (order kept); the result's item list *is* the model's, so ``build_sequences`` yields a
    dataset with the model's ``n_items`` and behavior codes."""
    t = clean.interactions
    check_canonical(t, where="align_to_vocab input")
    codes = vocabulary_codes(clean, item_ids, behavior_names)
    items, behaviors = codes.items.astype(np.int32), codes.behaviors - 1  # behaviors 0-based here, -1 unknown

    keep = (items > 0) & (behaviors >= 0)
    users = t.column(USER).to_numpy().astype(np.int64)[keep]
    kept_users, new_users = np.unique(users, return_inverse=True)  # sorted: the table's order is kept
    out = t.filter(pa.array(keep))
    out = out.set_column(out.schema.get_field_index(USER), USER, pa.array(new_users.astype(np.int32) + 1, pa.int32()))
    out = out.set_column(out.schema.get_field_index(ITEM), ITEM, pa.array(items[keep], pa.int32()))
    out = out.set_column(out.schema.get_field_index(BEHAVIOR), BEHAVIOR, pa.DictionaryArray.from_arrays(
        pa.array(behaviors[keep].astype(np.int8), pa.int8()), pa.array(list(behavior_names), pa.string())))
    check_canonical(out, where="align_to_vocab output")

    unknown_items = codes.unknown_items
    report = {
        "rows_in": int(t.num_rows), "rows_out": int(out.num_rows),
        "items_in": codes.n_items, "items_known": codes.n_items - unknown_items, "items_unknown": unknown_items,
        "rows_dropped_unknown_item": int((items == 0).sum()),
        "behaviors_unknown": codes.unknown_behaviors,
        "rows_dropped_unknown_behavior": int(((items > 0) & (behaviors < 0)).sum()),
        "users_in": len(clean.user_ids), "users_out": int(kept_users.size),
        "model_items": len(item_ids) - 1,
    }
    logger.info("aligned fresh data to the model's vocabulary: %s of %s items unknown (%s rows dropped), "
                "%s -> %s rows", f"{unknown_items:,}", f"{codes.n_items:,}",
                f"{report['rows_dropped_unknown_item']:,}", f"{t.num_rows:,}", f"{out.num_rows:,}")
    user_ids = clean.user_ids.take(pa.array(kept_users - 1)) if kept_users.size else clean.user_ids.slice(0, 0)
    aligned = CleanResult(interactions=out, user_ids=user_ids, item_ids=pa.array(item_ids[1:], pa.string()),
                          report={**clean.report, "aligned_to_vocab": report})
    return aligned, report


# ---- the head -----------------------------------------------------------------------------------------------------
def head_modules(model: nn.Module) -> list[str]:
    """The head: the last layer of the encoder stack and its final norm (``NextItemEncoder.head_modules``), e.g.
    ``["blocks.1", "ln_f"]`` for a 2-block SASRec.  Raises ``ValueError`` for a model without one."""
    if not isinstance(model, NextItemEncoder):
        raise ValueError(f"{type(model).__name__}: the refresh re-tunes an encoder's head; this is no encoder")
    try:
        return model.head_modules()
    except NotImplementedError as e:
        raise ValueError(str(e)) from None


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the head's parameters (those of :func:`head_modules`)."""
    prefixes = tuple(f"{m}." for m in head_modules(model))
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def retune_head(model: nn.Module, data: SequenceDataset, train_settings: dict | None, seed: int, *,
                on_epoch_end: Callable[[int, dict], None] | None = None) -> tuple[nn.Module, dict]:
    """Train only the head (:func:`head_parameter_names`) of ``model`` on ``data``'s warm users with the
    pre-training trainer (``train_settings`` as ``steps.*.parameters.training``); every other parameter and
    buffer is verified bit-identical afterwards.  Returns the model (on CPU) and a report."""
    if data.n_items != model.config.n_items or data.n_behaviors != model.config.n_behaviors:
        raise ValueError(f"data has {data.n_items} items / {data.n_behaviors} behaviors, the model "
                         f"{model.config.n_items} / {model.config.n_behaviors}: align the data to its vocabulary")
    tcfg = from_dict(TrainConfig, {**(train_settings or {}), "seed": seed}, where="steps.retune_head.parameters.training")
    head = set(head_parameter_names(model))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in head}
    frozen.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    for n, p in model.named_parameters():
        p.requires_grad_(n in head)
    n_head = sum(p.numel() for n, p in model.named_parameters() if n in head)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("re-tuning the head (%s of %s parameters: %s) on %d warm users", f"{n_head:,}", f"{n_all:,}",
                head_modules(model), len(data.warm_users))
    torch.manual_seed(seed)
    start = time.perf_counter()
    try:
        result = train(model, data, tcfg, on_epoch_end=on_epoch_end)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.cpu()
    current = {n: p.detach() for n, p in model.named_parameters()}
    current.update({f"buffer:{n}": b.detach() for n, b in model.named_buffers()})
    changed = [n for n, v in frozen.items() if not torch.equal(v.cpu(), current[n].cpu())]
    if changed:
        raise RuntimeError(f"frozen parameters changed while re-tuning the head: {changed[:10]}")
    report = {"head_modules": head_modules(model), "head_parameters": sorted(head), "n_head_parameters": n_head, "n_parameters": n_all,
              "n_frozen_tensors": len(frozen), "frozen_verified_identical": True,
              "wall_seconds": time.perf_counter() - start, "device": str(resolve_device(tcfg.device)),
              "train_config": vars(tcfg).copy(), "history": result.history, "best_epoch": result.best_epoch,
              "best_metric": {"name": f"valid_{tcfg.valid_metric}", "value": result.best_metric},
              "stopped_early": result.stopped_early}
    return model, report


def refresh_model(base: ChampionBase, data: SequenceDataset, train_settings: dict | None, *, seed: int,
                  on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainedModel:
    """The champion's base with its head re-tuned on ``data``, as a TrainedModel whose ``lineage.tags`` name the
    base version and the head (REGISTER sets them as the new version's tags)."""
    model, report = retune_head(base.model.build(), data, train_settings, seed, on_epoch_end=on_epoch_end)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainedModel(
        architecture=base.architecture, config=dict(base.config), state_dict=state,
        train_config=report["train_config"], history=report["history"], best_epoch=report["best_epoch"],
        best_metric=report["best_metric"],
        info={"n_parameters": report["n_parameters"], "n_trainable_parameters": report["n_head_parameters"],
              "head_parameters": report["head_parameters"], "wall_seconds": report["wall_seconds"],
              "device": report["device"], "stopped_early": report["stopped_early"],
              "refresh": "head re-tune", "base": base.describe()},
        lineage=Lineage(tags={BASE_VERSION_TAG: base.version, "refresh": "head-retune",
                              "head": ",".join(report["head_modules"])}),
    )


__all__ = ["BASE_VERSION_TAG", "ChampionBase", "align_to_vocab", "head_parameter_names", "head_modules",
           "refresh_model", "retune_head"]
