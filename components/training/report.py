"""Evaluate a trained model and the baselines (popularity, the user's own history) on every target set, under
both protocols, with the warm test targets also split into repeat and new targets."""

from __future__ import annotations

import logging

import numpy as np

from components.data.sequences import SequenceDataset
from components.metrics.plots import figure_png, training_curves
from components.metrics.report import EvaluationReport
from components.models.history import HistoryModel
from components.models.popularity import PopularityModel
from components.models.trained import TrainedModel
from components.training.evaluation import evaluate, history_excluded

logger = logging.getLogger(__name__)


def cold_test_groups(ts) -> dict[str, np.ndarray | None]:
    """The cold test users' groups as evaluate() subsets of the ``cold_test`` target set: few-shot instances,
    zero-shot instances, and both together (None: every instance)."""
    return {"cold_fewshot": ~ts.zero_shot, "cold_zeroshot": ts.zero_shot, "cold_joint": None}


def repeat_groups(split: str, ts) -> dict[str, np.ndarray | None]:
    """A target set and its two halves: ``<split>_repeat`` (the target occurs in the instance's own history) and
    ``<split>_new`` (it does not)."""
    repeat = np.asarray(ts.repeat, bool)
    return {split: None, f"{split}_repeat": repeat, f"{split}_new": ~repeat}


def baseline_models(data: SequenceDataset) -> dict:
    """The baselines a reviewer tries first, fitted on ``data``: ``popularity`` and ``history`` (the user's own
    items first)."""
    return {"popularity": PopularityModel(data.n_items).fit(data), "history": HistoryModel(data.n_items).fit(data)}


def evaluation_report(trained: TrainedModel, data: SequenceDataset, dataset: str, *, ks=(5, 10, 20, 50),
                      batch_size: int = 256, device: str = "cpu", exclude_history: bool | None = None,
                      pretrained: TrainedModel | None = None) -> EvaluationReport:
    """Metrics of ``trained``, of the popularity and history baselines and, for a tuned model, of the
    ``pretrained`` model it was tuned from (the "pre-train only" row), on warm (valid, test, test_repeat,
    test_new) and cold (cold_valid: the tuning users' held-out targets; cold_fewshot, cold_zeroshot, cold_joint:
    the cold test users) target sets.  The model's metrics also hold ``test_repeat_share``.  Candidates follow the
    split's ``history_items`` setting (``exclude_history`` None) unless ``exclude_history`` says otherwise."""
    models = {trained.name: trained.build(device)}
    if pretrained is not None and pretrained.name != trained.name:
        models[pretrained.name] = pretrained.build(device)
    models.update(baseline_models(data))
    metrics: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        out: dict[str, float] = {}
        for split in ("valid", "test", "cold_valid", "cold_test"):
            ts = data.targets.get(split)
            if ts is None or len(ts) == 0:
                continue
            parts = cold_test_groups(ts) if split == "cold_test" else \
                repeat_groups(split, ts) if split == "test" else {split: None}
            for label, subset in parts.items():
                if subset is not None and not np.any(subset):
                    continue
                r = evaluate(model, data, split, ks=tuple(ks), batch_size=batch_size, device=device,
                             exclude_history=exclude_history, subset=subset)
                out.update({f"{label}_{k}": float(v) for k, v in r.items()})
        metrics[name] = out
        logger.info("%s: test sampled%d NDCG@10 %.4f, full NDCG@10 %.4f", name, data.meta.get("n_negatives", 99),
                    out.get(f"test_sampled{data.meta.get('n_negatives', 99)}_ndcg_at_10", float("nan")),
                    out.get("test_full_ndcg_at_10", float("nan")))
    test = data.targets.get("test")
    repeat_share = float(np.mean(test.repeat)) if test is not None and len(test) else float("nan")
    metrics[trained.name]["test_repeat_share"] = repeat_share
    notes = [f"warm users: leave-one-out (last target event = test, second-to-last = valid); "
             f"cold users ({data.meta.get('cold_mode')}): few-shot = last target event with its history, "
             f"zero-shot = first target event with no history, joint = both together; cold_valid = the cold "
             f"tuning users' last target events (what tuning selects its epoch on)",
             f"popularity = count of target-behavior events in warm users' training prefixes",
             "history = the user's own history items first, by count of past interactions (most recent first among "
             "ties), then every other item by popularity",
             f"history_items = {data.meta.get('history_items', 'excluded')}: " + (
                 "items of the user's history are excluded from candidates (test targets already in their own "
                 f"history were dropped by the split: {data.meta.get('repeat_targets_dropped', {}).get('test', 0)})"
                 if history_excluded(data) else
                 "every item is a candidate, the user's history included; sampled negatives come from every item "
                 "but the target"),
             f"test_repeat_share = {repeat_share:.4f}: share of warm test targets already in the user's history "
             f"(test_repeat: those, test_new: the rest)"]
    png = figure_png(training_curves(trained.history, title=f"{trained.name} on {dataset}",
                                     best_epoch=trained.best_epoch)) if trained.history else None
    return EvaluationReport(dataset=dataset, metrics=metrics, ks=list(ks), notes=notes, curves_png=png,
                            history_items=data.meta.get("history_items", "excluded"))
