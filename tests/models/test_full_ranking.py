"""Full ranking of large catalogues in column chunks gives the ranks and candidate counts of the one-matrix path.

``evaluate`` holds a [batch, n_items + 1] score matrix while it fits ``max_scores``; beyond, it streams the
catalogue through ``Recommender.score_item_chunks`` and ``ranks_full_chunked``.  Here a tiny ``max_scores`` forces
the chunked path on a small catalogue, where both paths can be compared.
"""

from __future__ import annotations

import pytest
import torch

from components.metrics.ranking import n_candidates_full, ranks_full, ranks_full_chunked
from components.models import PopularityModel, SASRec, SASRecConfig
from components.models.history import HistoryModel
from components.training import TrainConfig, evaluate, train

from .synthetic import check_contract, make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)


def _chunks(scores: torch.Tensor, size: int):
    return ((lo, scores[:, lo:lo + size]) for lo in range(0, scores.shape[1], size))


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_chunked_ranks_equal_the_one_matrix_ranks_with_ties_nans_and_exclusions(size):
    g = torch.Generator().manual_seed(0)
    n, n_items = 40, 97
    scores = torch.randint(0, 6, (n, n_items + 1), generator=g).float()  # many ties
    scores[3, 10] = float("nan")
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, n_items + 1, (n,), generator=g)
    scores[5, targets[5]] = float("nan")  # a NaN target ranks last
    rows = torch.randint(0, n, (300,), generator=g)
    items = torch.randint(0, n_items + 1, (300,), generator=g)  # padding and repeats included
    rows[0], items[0] = 2, targets[2]  # an excluded target still competes
    exclude = torch.zeros(n, n_items + 1, dtype=torch.bool)
    exclude[rows, items] = True
    own = scores.gather(1, targets[:, None]).squeeze(1)
    for excluded, mask in (((rows, items), exclude), (None, None)):
        ranks, cands = ranks_full_chunked(own, _chunks(scores, size), targets, n_items, excluded)
        assert torch.equal(ranks, ranks_full(scores, targets, mask))
        assert torch.equal(cands, n_candidates_full(n_items, targets, mask))
    assert int(ranks[5]) == n_items - 1


def test_chunks_must_cover_the_catalogue_in_order():
    scores = torch.zeros(2, 11)
    targets = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="expected 0"):
        ranks_full_chunked(scores[:, 0], [(1, scores[:, 1:])], targets, 10)
    with pytest.raises(ValueError, match="cover items 0..4"):
        ranks_full_chunked(scores[:, 0], [(0, scores[:, :5])], targets, 10)


@pytest.fixture(scope="module")
def data():
    d = make_chain_dataset(n_warm=257, n_cold_tune=30, n_cold_test=30, n_items=452, seed=3)
    check_contract(d)
    return d


def test_evaluate_streams_large_catalogues_with_the_same_metrics(data):
    """Every model kind through ``evaluate`` with a budget of 1,000 scores (chunks of a few items) against the
    default (one matrix): identical metrics, history items excluded and not."""
    model = SASRec(SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=20, hidden=32))
    train(model, data, TrainConfig(epochs=2, batch_size=64, lr=5e-3, progress=False, device="cpu"))
    models = {"sasrec": model, "popularity": PopularityModel(data.n_items).fit(data),
              "history": HistoryModel(data.n_items).fit(data)}
    for name, m in models.items():
        for exclude in (True, False):
            one = evaluate(m, data, "test", protocols=("full",), exclude_history=exclude, batch_size=64)
            streamed = evaluate(m, data, "test", protocols=("full",), exclude_history=exclude, batch_size=64,
                                max_scores=1_000)
            assert streamed == one, (name, exclude)
    assert one["full_hr_at_10"] > 0  # the comparison is not between two empty results
