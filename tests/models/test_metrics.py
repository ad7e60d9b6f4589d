"""Golden tests for components.metrics.ranking: ranks and metrics worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from components.metrics.ranking import metrics_from_ranks, n_candidates_full, ranks_full, ranks_sampled


def test_ranks_sampled_counts_higher_and_tied_negatives():
    target = torch.tensor([0.9, 0.1, 0.5, 0.5])
    negatives = torch.tensor([
        [0.1, 0.2, 0.3],  # all below -> rank 0
        [0.5, 0.6, 0.7],  # all above -> rank 3 (worst)
        [0.5, 0.4, 0.1],  # one tie -> the tie counts against the target: rank 1
        [0.5, 0.5, 0.5],  # a constant model: worst rank, not best
    ])
    assert ranks_sampled(target, negatives).tolist() == [0, 3, 1, 3]


def test_ranks_sampled_nan_is_pessimistic():
    target = torch.tensor([float("nan"), 1.0])
    negatives = torch.tensor([[0.0, -1.0], [float("nan"), 0.0]])
    assert ranks_sampled(target, negatives).tolist() == [2, 1]


def test_ranks_full_ignores_padding_and_excluded_items_but_never_the_target():
    #                     pad    1    2    3    4    5
    scores = torch.tensor([[99.0, 0.3, 0.9, 0.5, 0.9, 0.1],
                           [99.0, 0.3, 0.9, 0.5, 0.9, 0.1]])
    targets = torch.tensor([2, 3])
    # Row 0: target 2 (0.9) ties item 4 -> rank 1.  Row 1: target 3 (0.5) is behind items 2 and 4 -> rank 2.
    assert ranks_full(scores, targets).tolist() == [1, 2]
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    exclude[0, 4] = True  # drop the tying item
    exclude[0, 2] = True  # "excluding" the target itself has no effect
    exclude[1, 2] = True
    assert ranks_full(scores, targets, exclude).tolist() == [0, 1]
    # Candidates: 5 items minus exclusions other than the target (and never counting padding).
    assert n_candidates_full(5, targets, exclude).tolist() == [4, 4]
    assert n_candidates_full(5, targets, None).tolist() == [5, 5]


def test_ranks_full_rejects_padding_target():
    with pytest.raises(ValueError, match="target ids"):
        ranks_full(torch.zeros(1, 4), torch.tensor([0]))


def test_metrics_from_ranks_hand_computed():
    ranks = torch.tensor([0, 3, 1, 3])
    m = metrics_from_ranks(ranks, n_candidates=4, ks=(1, 2, 5))
    assert m["hr_at_1"] == pytest.approx(1 / 4)
    assert m["hr_at_2"] == pytest.approx(2 / 4)
    assert m["hr_at_5"] == pytest.approx(1.0)  # K larger than the candidate list: every target is a hit
    assert m["ndcg_at_1"] == pytest.approx(1 / 4)
    assert m["ndcg_at_2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["ndcg_at_5"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(3) + 1 / math.log2(5)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 2 + 1 / 4) / 4)
    assert m["auc"] == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)


def test_metrics_from_ranks_default_names_and_per_instance_candidates():
    ranks = torch.tensor([0, 9, 10])
    m = metrics_from_ranks(ranks, n_candidates=torch.tensor([100, 10, 11]))
    assert {"hr_at_5", "hr_at_10", "hr_at_20", "hr_at_50", "ndcg_at_10", "mrr", "auc"} <= set(m)
    assert m["hr_at_10"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx((1 + 0 + 0) / 3)  # ranks 9 of 10 and 10 of 11 are the last places


def test_metrics_match_a_per_instance_reference():
    g = torch.Generator().manual_seed(3)
    target = torch.randn(37, generator=g)
    negatives = torch.randn(37, 19, generator=g).round(decimals=1)  # rounding makes ties happen
    target = target.round(decimals=1)
    ranks = ranks_sampled(target, negatives)
    m = metrics_from_ranks(ranks, 20, ks=(3, 10))
    ref_hr, ref_ndcg = 0.0, 0.0
    for t, negs in zip(target.tolist(), negatives.tolist()):
        r = sum(1 for s in negs if s >= t)
        ref_hr += r < 10
        ref_ndcg += (1 / math.log2(r + 2)) if r < 3 else 0.0
    assert m["hr_at_10"] == pytest.approx(ref_hr / 37)
    assert m["ndcg_at_3"] == pytest.approx(ref_ndcg / 37)


def test_metrics_input_checks_and_empty():
    with pytest.raises(ValueError, match="K must be"):
        metrics_from_ranks(torch.tensor([0]), 5, ks=(0,))
    with pytest.raises(ValueError, match="ranks must lie"):
        metrics_from_ranks(torch.tensor([5]), 5)
    assert math.isnan(metrics_from_ranks(torch.zeros(0, dtype=torch.long), 100)["hr_at_10"])
