"""Evaluate any model (a ``components.models.base.Recommender``) on a target set under the sampled and/or
full-ranking protocol.

Metric names carry their protocol, because the two are not comparable (sampled numbers are much higher):
``sampled{m}_hr_at_10`` ranks the target against the m negatives stored with the split (m = 99 usually), the same
ones for every model; ``full_hr_at_10`` ranks it against every item.

Which items are candidates follows the split's ``history_items`` setting (``data.meta["history_items"]``, see
``components.data.split``), so that no candidate set ever depends on which item is the target:
- ``candidates`` (multi-behavior logs, where most next buys are items the user already clicked): full ranking
  ranks the target against every item, the user's history included; the stored negatives were drawn from every
  item but the target.
- ``excluded`` (ML-1M, where a user rates a movie once): the user's history items are not candidates; the split
  has already dropped the (rare) targets that occur in their own history, so excluding the history never removes
  a target's competitors selectively.  The stored negatives were drawn from items the user never touched.
``exclude_history`` overrides the setting (True/False); None (default) follows it.  Ties are pessimistic (see
``components.metrics.ranking``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import SequenceDataset, TargetSet
from components.metrics.ranking import (DEFAULT_KS, metrics_from_ranks, n_candidates_full, ranks_full,
                                        ranks_full_chunked, ranks_sampled)
from components.models.base import Recommender
from components.training.batches import eval_batches

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None, model: object | None = None) -> torch.device:
    """'auto' -> CUDA when available; None -> the device of the model's first parameter/buffer (else CPU)."""
    if device is None:
        if isinstance(model, torch.nn.Module):
            for t in list(model.parameters()) + list(model.buffers()):
                return t.device
        return torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


HISTORY_ITEMS = ("candidates", "excluded")
#: Largest [instances x items] score matrix full ranking holds at once (2**26 fp32 scores: 256 MB, plus two bool
#: masks of that shape); a larger catalogue is ranked in column chunks.
FULL_RANKING_MAX_SCORES = 1 << 26


def history_excluded(data: SequenceDataset) -> bool:
    """Whether the split's ``history_items`` setting excludes history items from candidates (data split before the
    setting existed drew its negatives from never-touched items: ``excluded``)."""
    mode = data.meta.get("history_items", "excluded")
    if mode not in HISTORY_ITEMS:
        raise ValueError(f"dataset meta history_items={mode!r}; expected one of {HISTORY_ITEMS}")
    return mode == "excluded"


@torch.no_grad()
def evaluate(
    model: Recommender,
    data: SequenceDataset,
    target_set: str | TargetSet,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    protocols: Sequence[str] = ("sampled", "full"),
    batch_size: int = 256,
    device: str | torch.device | None = None,
    exclude_history: bool | None = None,
    subset: np.ndarray | None = None,
    max_len: int | None = None,
    per_instance: dict | None = None,
    max_scores: int = FULL_RANKING_MAX_SCORES,
) -> dict[str, float]:
    """Metrics of ``model`` on one target set: ``{protocol}_{metric}`` plus ``n`` (instances evaluated).

    ``subset`` (bool over the target set's instances) restricts evaluation, e.g. to ``zero_shot`` rows of
    ``cold_test``.  ``max_len`` defaults to the model's own window; a model whose ``max_len`` is None (the history
    baseline) reads each instance's whole history.  ``per_instance``, when a dict, is filled with numpy arrays
    per evaluated instance, in target-set order: ``index`` (row of the target set), ``users``, ``sampled_rank``,
    ``full_rank`` and ``full_candidates`` (the protocols evaluated), for paired comparisons between models.  The model is put in eval mode and given back
    in the mode it came in.  Full ranking holds a [batch_size, n_items + 1] score matrix plus two bool masks of
    that shape on the device while that is at most ``max_scores`` entries; beyond, it streams the catalogue in
    column chunks of ``max_scores // batch_size`` items (``Recommender.score_item_chunks``,
    ``components.metrics.ranking.ranks_full_chunked``), so memory stays within the budget whatever the catalogue.
    """
    unknown = sorted(set(protocols) - {"sampled", "full"})
    if unknown:
        raise ValueError(f"evaluate: unknown protocol(s) {unknown}; use 'sampled' and/or 'full'")
    if isinstance(target_set, str):
        if target_set not in data.targets:
            raise KeyError(f"evaluate: target set {target_set!r} not in dataset (has {sorted(data.targets)})")
        ts = data.targets[target_set]
    else:
        ts = target_set
    dev = resolve_device(device, model)
    if not isinstance(model, Recommender):
        raise TypeError(f"evaluate: {type(model).__name__} is not a components.models.base.Recommender")
    window = max_len if max_len is not None else model.max_len
    window = None if window is None else int(window)
    if exclude_history is None:
        exclude_history = history_excluded(data)
    m = int(ts.negatives.shape[1]) if ts.negatives.ndim == 2 else 0
    do_sampled = "sampled" in protocols and m > 0
    if "sampled" in protocols and m == 0:
        logger.warning("evaluate: target set has no stored negatives; skipping the sampled protocol")
    do_full = "full" in protocols

    # Models that read user profiles (components.tuning) score with each instance user's profile codes.
    profile_rows = model.profile_table(data)
    was_training = model.training
    model.eval()
    sampled_ranks: list[Tensor] = []
    full_ranks: list[Tensor] = []
    full_cands: list[Tensor] = []
    rows: list[np.ndarray] = []
    n = 0
    try:
        for b in eval_batches(data, ts, window, batch_size, subset=subset):
            items, behaviors = b.items.to(dev), b.behaviors.to(dev)
            targets = b.targets.to(dev)
            n += len(targets)
            rows.append(b.index)
            profiles = torch.from_numpy(profile_rows[b.users]).to(dev) if profile_rows is not None else None
            if do_sampled:
                cands = torch.cat([targets[:, None], b.negatives.to(dev)], dim=1)  # [B, 1+m]
                s = model.score_items(items, behaviors, cands, profiles).float()  # [B, 1+m]
                sampled_ranks.append(ranks_sampled(s[:, 0], s[:, 1:]).cpu())
            if do_full and len(targets) * (data.n_items + 1) <= max_scores:
                scores = model.score_all(items, behaviors, profiles).float()  # [B, n_items+1]
                exclude = b.exclude_mask(data.n_items, dev) if exclude_history else None
                full_ranks.append(ranks_full(scores, targets, exclude).cpu())
                full_cands.append(n_candidates_full(data.n_items, targets, exclude).cpu())
            elif do_full:  # a catalogue too large for one matrix: stream it in column chunks
                own = model.score_items(items, behaviors, targets[:, None], profiles)[:, 0]
                chunks = ((lo, s.float()) for lo, s in model.score_item_chunks(
                    items, behaviors, max(1, max_scores // len(targets)), profiles))
                excluded = (b.history_rows.to(dev), b.history_items.to(dev)) if exclude_history else None
                ranks, cands = ranks_full_chunked(own, chunks, targets, data.n_items, excluded)
                full_ranks.append(ranks.cpu())
                full_cands.append(cands.cpu())
    finally:
        model.train(was_training)

    if per_instance is not None:
        index = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        per_instance.update(index=index, users=ts.users[index].astype(np.int64))
        if do_sampled:
            per_instance["sampled_rank"] = torch.cat(sampled_ranks).numpy() if sampled_ranks else np.zeros(0, np.int64)
        if do_full:
            per_instance["full_rank"] = torch.cat(full_ranks).numpy() if full_ranks else np.zeros(0, np.int64)
            per_instance["full_candidates"] = torch.cat(full_cands).numpy() if full_cands else np.zeros(0, np.int64)
    out: dict[str, float] = {"n": n}
    if do_sampled:
        r = torch.cat(sampled_ranks) if sampled_ranks else torch.zeros(0, dtype=torch.long)
        for k, v in metrics_from_ranks(r, m + 1, ks).items():
            out[f"sampled{m}_{k}"] = v
    if do_full:
        r = torch.cat(full_ranks) if full_ranks else torch.zeros(0, dtype=torch.long)
        c = torch.cat(full_cands) if full_cands else torch.zeros(0, dtype=torch.long)
        for k, v in metrics_from_ranks(r, c, ks).items():
            out[f"full_{k}"] = v
    return out
