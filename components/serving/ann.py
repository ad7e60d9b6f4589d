"""An optional approximate top-K for batch recommendations: an HNSW inner-product index (faiss) over a dot-product
model's item table.

Exact top-K (``ServedModel.top_k``) scores every item for every user: at a million items that is the whole cost of
a batch run.  A dot-product model scores item i for a user as ``state . table[i]``, so an HNSW graph over the
table finds the best items after visiting a few thousand.  What is given up is exactness: the index may miss some
of the true top K.  :func:`recall_at_k` measures how many it keeps against the exact answer on the same users,
and the batch step reports it on a sample before writing anything, so nobody ships an index without the number.

Models: those whose scores are ``user_state @ output_embeddings().T`` (every encoder and every tuned model).
Others (the repeat-aware head, the baselines) are refused.  Seen items are excluded as in the exact path: the
index is asked for ``k`` plus the most history items any row of the batch has, those are dropped, and the best
``k`` of the rest are kept.  Needs the ``ann`` extra (``pip install -e ".[ann]"``: faiss-cpu).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from components.models.base import NextItemEncoder, Recommender


@dataclass(frozen=True)
class IndexConfig:
    """HNSW settings: ``m`` links per node (memory and build time grow with it), ``ef_construction`` the build's
    search width, ``ef_search`` the query's (recall and query time grow with it)."""

    m: int = 32
    ef_construction: int = 64
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.m < 4 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(f"IndexConfig: m >= 4, ef_construction and ef_search >= 1; got {self}")


def is_dot_product(model: Recommender) -> bool:
    """Whether ``model`` scores as ``user_state @ output_embeddings().T`` (so an inner-product index applies): an
    encoder or a tuned model that keeps the base classes' scoring."""
    from components.models.tuned.base import TunedRecommender

    return any(isinstance(model, base) and type(model).score_all is base.score_all
               for base in (NextItemEncoder, TunedRecommender))


class ApproximateIndex:
    """HNSW inner-product index over items 1..n of a dot-product model; :meth:`top_k` mirrors
    ``ServedModel.top_k``'s output (contiguous ids, scores, -inf / id 0 where nothing is left)."""

    def __init__(self, model: Recommender, config: IndexConfig = IndexConfig()):
        try:
            import faiss
        except ImportError as e:  # the optional extra
            raise ImportError("an approximate index needs faiss: pip install -e '.[ann]' (faiss-cpu)") from e
        if not is_dot_product(model):
            raise ValueError(f"an approximate index needs a dot-product model (user state . item vector); "
                             f"{type(model).__name__} is not one: use exact top-K")
        self.model, self.config = model, config
        with torch.no_grad():
            table = model.output_embeddings()[1:].detach().float().cpu().numpy()
        self.n_items = table.shape[0]
        self.index = faiss.IndexHNSWFlat(table.shape[1], config.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = config.ef_construction
        self.index.hnsw.efSearch = config.ef_search
        self.index.add(np.ascontiguousarray(table))

    @torch.no_grad()
    def states(self, items: np.ndarray, behaviors: np.ndarray, profile_codes: np.ndarray | None = None) -> np.ndarray:
        device = next(self.model.parameters()).device
        items_t = torch.as_tensor(items, dtype=torch.long, device=device)
        behaviors_t = torch.as_tensor(behaviors, dtype=torch.long, device=device)
        if self.model.uses_profiles:
            codes = None if profile_codes is None else torch.as_tensor(profile_codes, dtype=torch.long, device=device)
            state = self.model.user_state(items_t, behaviors_t, codes)
        else:
            state = self.model.user_state(items_t, behaviors_t)
        return np.ascontiguousarray(state.float().cpu().numpy())

    def top_k(self, items: np.ndarray, behaviors: np.ndarray, k: int, *, exclude_seen: bool,
              seen: tuple[np.ndarray, np.ndarray] | None = None,
              profile_codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n, k] contiguous, 0 where nothing is left; scores [n, k] float32, -inf there), best first."""
        n = len(items)
        extra = 0
        if exclude_seen and seen is not None and len(seen[0]):
            extra = int(np.bincount(seen[0], minlength=n).max())
        fetch = min(k + extra, self.n_items)
        scores, found = self.index.search(self.states(items, behaviors, profile_codes), fetch)
        ids = found.astype(np.int64) + 1  # faiss rows are items 1..n; -1 (not found) becomes 0
        scores = np.where(found >= 0, scores, -np.inf).astype(np.float32)
        if extra:  # a found item that is one of its row's history items: (row, item) keys as row * base + item
            base = self.n_items + 1
            hit = np.isin(np.arange(n)[:, None] * base + ids, seen[0].astype(np.int64) * base + seen[1])
            scores = np.where(hit, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(ids, order, axis=1), 0)
        return top_ids, top_scores


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-K ids (id 0 = no item, ignored) that the approximate top-K also holds, over rows."""
    hits = total = 0
    for a, e in zip(approximate, exact):
        e = set(e[e > 0].tolist())
        hits += len(e & set(a[a > 0].tolist()))
        total += len(e)
    return hits / total if total else 1.0
