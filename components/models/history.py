"""The user's-own-history baseline: rank the items the user already touched first, by how often.

On repeat-heavy logs (most next buys on Taobao are items the user clicked or carted before) this rule, with no
learning at all, is the baseline a reviewer tries first, so every evaluation reports it beside popularity.

Score of item v for a history h (every event before the target, all behaviors, the whole history, not a window):
- v in h:   ``count_w(v) + recency(v)``, where ``count_w(v)`` is the sum over v's events of the weight of their
  behavior (``behavior_weights``, default 1 for every behavior: a plain count) and
  ``recency(v) = 0.5 * (1 + last index of v in h) / (len(h) + 1)``, in (0, 0.5): among equal counts the item
  seen most recently comes first, and a tie-break never outweighs one more interaction;
- v not in h: ``popularity(v) - 1`` with popularity scaled into [0, 1) (``components.models.popularity``'s score
  over warm users' training prefixes): below every history item, ordered by popularity among themselves, so a
  user with a short history still gets a full ranking (the popularity baseline's).
Behavior weights must be > 0, so an item in the history always scores at least its smallest weight.  The model
reads whole histories: its ``max_len`` is None, which tells the evaluator to pass every history event.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import SequenceDataset
from components.models.base import Recommender
from components.models.popularity import PopularityModel


class HistoryModel(Recommender):
    def __init__(self, n_items: int, behavior_weights: dict[str, float] | None = None):
        super().__init__()
        self.n_items = n_items
        self.behavior_weights = dict(behavior_weights or {})
        bad = {k: v for k, v in self.behavior_weights.items() if not v > 0}
        if bad:
            raise ValueError(f"HistoryModel: behavior weights must be > 0, got {bad}")
        self.register_buffer("fallback", torch.zeros(n_items + 1))
        self.register_buffer("weights", torch.ones(1))  # per behavior code (index 0 = padding), set by fit()

    def fit(self, data: SequenceDataset) -> "HistoryModel":
        if data.n_items != self.n_items:
            raise ValueError(f"HistoryModel.fit: model has n_items={self.n_items}, data has {data.n_items}")
        unknown = sorted(set(self.behavior_weights) - set(data.behavior_names))
        if unknown:
            raise ValueError(f"HistoryModel: behavior weight(s) for {unknown}, not in {data.behavior_names}")
        pop = PopularityModel(self.n_items).fit(data).scores.double().numpy()
        finite = np.isfinite(pop)
        top = pop[finite].max(initial=0.0)
        fallback = np.where(finite, pop / (top + 1.0), 0.0) - 1.0  # in [-1, 0)
        fallback[0] = -np.inf
        self.fallback = torch.from_numpy(fallback).float()
        w = [0.0] + [float(self.behavior_weights.get(b, 1.0)) for b in data.behavior_names]
        self.weights = torch.tensor(w, dtype=torch.float32)
        return self

    @property
    def max_len(self) -> int | None:
        return None  # whole histories

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, N] left-padded whole histories -> [B, n_items + 1]."""
        B, N = items.shape
        dev = items.device
        valid = items != 0
        w = self.weights.to(dev)[behaviors.clamp(min=0, max=len(self.weights) - 1)] * valid
        count = torch.zeros(B, self.n_items + 1, device=dev)
        count.scatter_add_(1, items, w)
        lengths = valid.sum(1, keepdim=True)
        # Index of each event counted from the first real one (left padding), 1-based.
        index = (valid.long().cumsum(1)).float() * valid
        last = torch.zeros(B, self.n_items + 1, device=dev)
        last.scatter_reduce_(1, items, index, reduce="amax", include_self=True)
        recency = 0.5 * last / (lengths.float() + 1.0)
        scores = torch.where(count > 0, count + recency, self.fallback.to(dev).expand(B, -1))
        scores[:, 0] = float("-inf")
        return scores

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor,
                    profiles: Tensor | None = None) -> Tensor:
        """[B, N] whole histories, candidates [B, C] -> [B, C]."""
        return self.score_all(items, behaviors).gather(1, candidates)
