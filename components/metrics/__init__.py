"""Ranking metrics (torch tensors in, Python floats out)."""

from components.metrics.ranking import (
    DEFAULT_KS,
    metrics_from_ranks,
    n_candidates_full,
    ranks_full,
    ranks_sampled,
)

__all__ = ["DEFAULT_KS", "metrics_from_ranks", "n_candidates_full", "ranks_full", "ranks_sampled"]
