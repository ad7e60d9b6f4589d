"""Rank-based top-K metrics for next-item recommendation with exactly one target per instance.

A *rank* here is 0-based: the number of competing candidates placed ahead of the target, so rank 0 is a hit at
position 1.  Every metric is a function of that rank alone:

    hr@K    = 1[rank < K]
    ndcg@K  = 1[rank < K] / log2(rank + 2)      (one relevant item, so the ideal DCG is 1)
    mrr     = 1 / (rank + 1)                   (no cutoff)
    auc     = 1 - rank / (n_candidates - 1)    (share of negatives scored below the target)

Ties count against the target ("pessimistic" ranking): a candidate with exactly the target's score is placed
ahead of it.  Why: with the optimistic or "first index wins" convention a model that scores everything the same
(an untrained net, a popularity model on items never seen, a NaN) would rank every target first and look perfect.
Pessimistic ties make such a model score the worst possible rank instead, so ties can never inflate a result.
NaN scores are treated the same way: a NaN target scores -inf, a NaN candidate +inf.

Column 0 of a full score matrix is the padding id and is never a candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)


def _pessimistic(target: Tensor, others: Tensor) -> tuple[Tensor, Tensor]:
    """Replace NaNs so that they hurt the target: NaN target -> -inf, NaN candidate -> +inf."""
    target = torch.nan_to_num(target.float(), nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    others = torch.nan_to_num(others.float(), nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))
    return target, others


def ranks_sampled(target_scores: Tensor, negative_scores: Tensor) -> Tensor:
    """Rank of each target among its own sampled negatives.

    target_scores [n], negative_scores [n, m] -> LongTensor [n] in 0..m (m = worst).
    """
    if target_scores.dim() != 1 or negative_scores.dim() != 2 or negative_scores.shape[0] != target_scores.shape[0]:
        raise ValueError(f"ranks_sampled: expected target_scores [n] and negative_scores [n, m]; got "
                         f"{tuple(target_scores.shape)} and {tuple(negative_scores.shape)}")
    t, neg = _pessimistic(target_scores, negative_scores)
    # >= counts strictly higher scores plus ties: the pessimistic rank.
    return (neg >= t[:, None]).sum(dim=1)


def ranks_full(scores: Tensor, targets: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Rank of each target among all items 1..n_items.

    scores [n, n_items+1] (column 0 = padding, ignored), targets [n] item ids, exclude bool [n, n_items+1] or None:
    items to drop from the candidate list (e.g. the user's history).  The target itself is never excluded.
    Returns LongTensor [n].  Cost is one comparison per (instance, item), the same as a top-K pass, and it gives
    the exact rank (needed for MRR and AUC) instead of only "inside top-K or not".
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"ranks_full: expected scores [n, n_items+1] and targets [n]; got "
                         f"{tuple(scores.shape)} and {tuple(targets.shape)}")
    if exclude is not None and exclude.shape != scores.shape:
        raise ValueError(f"ranks_full: exclude mask has shape {tuple(exclude.shape)}, scores {tuple(scores.shape)}")
    if bool((targets < 1).any()) or bool((targets >= scores.shape[1]).any()):
        raise ValueError(f"ranks_full: target ids must lie in 1..{scores.shape[1] - 1}")
    targets = targets.long()
    t = scores.gather(1, targets[:, None]).squeeze(1)  # [n]
    t, s = _pessimistic(t, scores)
    ahead = s >= t[:, None]  # [n, n_items+1] bool
    ahead[:, 0] = False  # padding is not an item
    if exclude is not None:
        ahead &= ~exclude
    ahead.scatter_(1, targets[:, None], False)  # the target does not compete with itself
    return ahead.sum(dim=1)


def n_candidates_full(n_items: int, targets: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Candidates (target included) each instance of ``ranks_full`` was ranked among: n_items minus exclusions."""
    n = torch.full(targets.shape, n_items, dtype=torch.long, device=targets.device)
    if exclude is None:
        return n
    excl = exclude.clone()
    excl[:, 0] = False
    excl.scatter_(1, targets.long()[:, None], False)
    return n - excl.sum(dim=1)


def ranks_full_chunked(target_scores: Tensor, chunks: Iterable[tuple[int, Tensor]], targets: Tensor, n_items: int,
                       excluded: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``ranks_full`` and ``n_candidates_full`` without the [n, n_items + 1] matrices: the scores arrive as column
    chunks (first item id, [n, c]) covering ids 0..n_items in order, the exclusions as (row, item) pairs.

    ``target_scores`` [n]: each target's own score (the model's ``score_items``), compared with every other item's
    as ``ranks_full`` compares them (pessimistic ties, NaNs against the target).  A model whose chunked scores and
    ``score_items`` round differently may rank a near-tie (within float rounding of the target) otherwise than the
    one-matrix path; models scoring both the same way (the baselines) rank exactly alike."""
    targets = targets.long()
    t = torch.nan_to_num(target_scores.float(), nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    ranks = torch.zeros(targets.shape, dtype=torch.long, device=targets.device)
    rows, items = excluded if excluded is not None else (targets.new_zeros(0), targets.new_zeros(0))
    rows, items = rows.long().to(targets.device), items.long().to(targets.device)
    end = 0
    for lo, scores in chunks:
        if lo != end:
            raise ValueError(f"ranks_full_chunked: chunk starts at item {lo}, expected {end}")
        end = lo + scores.shape[1]
        ahead = _pessimistic(t, scores)[1] >= t[:, None]
        if lo == 0:
            ahead[:, 0] = False  # padding is not an item
        sel = (items >= lo) & (items < end)
        ahead[rows[sel], items[sel] - lo] = False
        own = ((targets >= lo) & (targets < end)).nonzero().squeeze(1)
        ahead[own, targets[own] - lo] = False  # the target does not compete with itself
        ranks += ahead.sum(dim=1)
    if end != n_items + 1:
        raise ValueError(f"ranks_full_chunked: chunks cover items 0..{end - 1}, the catalogue 0..{n_items}")
    # Distinct excluded items per row, neither padding nor the row's target.
    keys = torch.unique(rows * (n_items + 1) + items)
    r, i = keys // (n_items + 1), keys % (n_items + 1)
    keep = (i != 0) & (i != targets[r])
    n_excluded = torch.bincount(r[keep], minlength=targets.shape[0])
    return ranks, n_items - n_excluded


def metrics_from_ranks(ranks: Tensor, n_candidates: int | Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean hr@K, ndcg@K (for every K), mrr and auc over instances.

    ranks [n] 0-based pessimistic ranks; n_candidates: the size of each candidate list *including* the target,
    one int for all instances (sampled protocol) or a tensor [n] (full ranking with per-user exclusions).  A K at
    least as large as the candidate list simply gives hr@K = 1.  An empty ``ranks`` gives NaN means, not an error,
    so an empty subset (e.g. no zero-shot users) is visible in a report rather than fatal.
    """
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"metrics_from_ranks: every K must be >= 1, got {list(ks)}")
    r = ranks.double()
    nc = torch.as_tensor(n_candidates, dtype=torch.float64, device=r.device)
    if bool((nc < 1).any()):
        raise ValueError("metrics_from_ranks: n_candidates must be >= 1 (the target itself)")
    if bool((r < 0).any()) or bool((r > nc - 1).any()):
        raise ValueError("metrics_from_ranks: ranks must lie in 0..n_candidates-1")
    out: dict[str, float] = {}
    gain = 1.0 / torch.log2(r + 2.0)
    for k in ks:
        hit = r < k
        out[f"hr_at_{k}"] = hit.double().mean().item()
        out[f"ndcg_at_{k}"] = torch.where(hit, gain, torch.zeros_like(gain)).mean().item()
    out["mrr"] = (1.0 / (r + 1.0)).mean().item()
    # With a single candidate there are no negatives to beat: AUC is undefined there, count it as 1 (no error).
    denom = torch.clamp(nc - 1.0, min=1.0)
    out["auc"] = (1.0 - r / denom).mean().item()
    return out
