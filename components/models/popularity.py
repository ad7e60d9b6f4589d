"""Most-popular baseline: every user gets the same ranking, by how often warm users acted on each item.

It is the floor a sequential model must clear.  Counts come only from warm users' *training prefixes*
(``offsets[u]:train_end[u]``), so validation and test targets never leak into the baseline.  The score is the
number of target-behavior events (e.g. buys), with ties broken by the count over all behaviors: on sparse target
behaviors most items have zero buys, and without the tie-break they would all tie, which pessimistic ranking
(see ``components.metrics.ranking``) turns into the worst rank.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import SequenceDataset
from components.models.base import Recommender


def training_event_mask(data: SequenceDataset, users: np.ndarray) -> np.ndarray:
    """bool [n_events]: True for events in the training prefixes (offsets[u]:train_end[u]) of ``users``."""
    users = np.asarray(users, dtype=np.int64)
    start = data.offsets[users].astype(np.int64)
    end = data.train_end[users].astype(np.int64)
    # Difference array over event indices: +1 where a prefix starts, -1 where it ends (prefixes never overlap).
    delta = np.zeros(len(data.items) + 1, dtype=np.int64)
    np.add.at(delta, start, 1)
    np.add.at(delta, end, -1)
    return np.cumsum(delta[:-1]) > 0


class PopularityModel(Recommender):
    def __init__(self, n_items: int):
        super().__init__()
        # A buffer (not a parameter): moves with .to(device) and lands in state_dict, but is never trained.
        self.register_buffer("scores", torch.zeros(n_items + 1))
        self.n_items = n_items

    def fit(self, data: SequenceDataset) -> "PopularityModel":
        if data.n_items != self.n_items:
            raise ValueError(f"PopularityModel.fit: model has n_items={self.n_items}, data has {data.n_items}")
        in_train = training_event_mask(data, data.warm_users)
        items = data.items[in_train].astype(np.int64)
        is_target = np.isin(data.behaviors[in_train], np.asarray(data.target_behaviors))
        target_count = np.bincount(items[is_target], minlength=self.n_items + 1).astype(np.float64)
        all_count = np.bincount(items, minlength=self.n_items + 1).astype(np.float64)
        # all_count / (max + 1) < 1, so it only orders items with equal target counts.
        score = target_count + all_count / (all_count.max(initial=0.0) + 1.0)
        score[0] = -np.inf
        self.scores.copy_(torch.from_numpy(score).to(self.scores.dtype))
        return self

    @property
    def max_len(self) -> int:
        return 1  # histories are ignored; evaluation may pass the shortest window

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories (ignored) -> [B, n_items + 1]."""
        return self.scores.expand(items.shape[0], -1).clone()

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor,
                    profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories (ignored), candidates [B, C] -> [B, C]."""
        return self.scores[candidates]
