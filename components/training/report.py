"""Evaluate a trained model and the popularity baseline on every target set, under both protocols."""

from __future__ import annotations

import logging

import numpy as np

from components.data.sequences import SequenceDataset
from components.metrics.plots import figure_png, training_curves
from components.metrics.report import EvaluationReport
from components.models.popularity import PopularityModel
from components.models.trained import TrainedModel
from components.training.evaluation import evaluate

logger = logging.getLogger(__name__)


def cold_test_groups(ts) -> dict[str, np.ndarray | None]:
    """The cold test users' groups as evaluate() subsets of the ``cold_test`` target set: few-shot instances,
    zero-shot instances, and both together (None: every instance)."""
    return {"cold_fewshot": ~ts.zero_shot, "cold_zeroshot": ts.zero_shot, "cold_joint": None}


def evaluation_report(trained: TrainedModel, data: SequenceDataset, dataset: str, *, ks=(5, 10, 20, 50),
                      batch_size: int = 256, device: str = "cpu", exclude_history: bool = True,
                      pretrained: TrainedModel | None = None) -> EvaluationReport:
    """Metrics of ``trained``, of popularity and, for a tuned model, of the ``pretrained`` model it was tuned from
    (the "pre-train only" row), on warm (valid, test) and cold (cold_valid: the tuning users' held-out targets;
    cold_fewshot, cold_zeroshot, cold_joint: the cold test users) target sets."""
    models = {trained.architecture: trained.build(device)}
    if pretrained is not None and pretrained.architecture != trained.architecture:
        models[pretrained.architecture] = pretrained.build(device)
    models["popularity"] = PopularityModel(data.n_items).fit(data)
    metrics: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        out: dict[str, float] = {}
        for split in ("valid", "test", "cold_valid", "cold_test"):
            ts = data.targets.get(split)
            if ts is None or len(ts) == 0:
                continue
            parts = cold_test_groups(ts) if split == "cold_test" else {split: None}
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
    notes = [f"warm users: leave-one-out (last target event = test, second-to-last = valid); "
             f"cold users ({data.meta.get('cold_mode')}): few-shot = last target event with its history, "
             f"zero-shot = first target event with no history, joint = both together; cold_valid = the cold "
             f"tuning users' last target events (what tuning selects its epoch on)",
             f"popularity = count of target-behavior events in warm users' training prefixes"]
    png = figure_png(training_curves(trained.history, title=f"{trained.architecture} on {dataset}")) \
        if trained.history else None
    return EvaluationReport(dataset=dataset, metrics=metrics, ks=list(ks), notes=notes, curves_png=png)
