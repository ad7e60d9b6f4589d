"""The history baseline and the candidate sets of both ``history_items`` settings, on small cases built here and
on the real Taobao head (where two thirds of the last buys are repeats)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.clean import CleanConfig, clean_interactions
from components.data.split import SplitConfig, build_sequences
from components.metrics.ranking import metrics_from_ranks
from components.models.history import HistoryModel
from components.models.popularity import PopularityModel
from components.training.evaluation import evaluate
from components.models.losses import sample_negatives

TAOBAO_WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00")


@pytest.fixture(scope="module")
def taobao(taobao_head):
    from components.data.readers import read_dataset

    raw = read_dataset("taobao", taobao_head).interactions
    clean = clean_interactions(raw, CleanConfig(time_window=TAOBAO_WINDOW))
    cfg = dict(target_behaviors=["buy"], cold_threshold=5, seed=3)
    return {mode: build_sequences(clean, None, SplitConfig(**cfg, history_items=mode))
            for mode in ("candidates", "excluded")}


def test_history_scores_count_then_recency_then_popularity(taobao):
    data = taobao["candidates"]
    model = HistoryModel(data.n_items).fit(data)
    # History (oldest first): 5, 7, 5, 9, 7, 3 -> 5 and 7 twice (7 more recent), 9 and 3 once (3 more recent).
    items = torch.tensor([[0, 0, 5, 7, 5, 9, 7, 3]])
    s = model.score_all(items, torch.ones_like(items))[0]
    order = torch.argsort(s, descending=True)[:4].tolist()
    assert order == [7, 5, 3, 9]
    others = torch.ones(data.n_items + 1, dtype=torch.bool)
    others[[0, 3, 5, 7, 9]] = False
    assert s[others].max() < s[[3, 5, 7, 9]].min()  # every history item above every other item
    pop = PopularityModel(data.n_items).fit(data).scores
    rest = torch.nonzero(others).squeeze(1)
    # below the history: popularity's order
    assert torch.equal(torch.argsort(s[rest], descending=True, stable=True),
                       torch.argsort(pop[rest], descending=True, stable=True))
    # behavior weights: a cart on 9 outweighs two clicks on 5 when a cart counts 3
    weighted = HistoryModel(data.n_items, {"cart": 3.0}).fit(data)
    beh = torch.tensor([[0, 0, 1, 1, 1, 2, 1, 1]])  # codes: click=1, cart=2
    w = weighted.score_all(items, beh)[0]
    assert w[9] > w[5] and w[9] > w[7]
    with pytest.raises(ValueError, match="> 0"):
        HistoryModel(data.n_items, {"cart": 0.0})
    with pytest.raises(ValueError, match="not in"):
        HistoryModel(data.n_items, {"purchase": 2.0}).fit(data)


def test_no_candidate_set_depends_on_the_target(taobao):
    for mode, data in taobao.items():
        pop = PopularityModel(data.n_items).fit(data)
        per: dict = {}
        evaluate(pop, data, "test", ks=(10,), per_instance=per)
        ts = data.targets["test"]
        assert np.array_equal(per["index"], np.arange(len(ts)))
        if mode == "candidates":
            assert (per["full_candidates"] == data.n_items).all()  # every item, whatever the target
        else:
            for r, u in enumerate(ts.users.astype(np.int64)):
                hist = set(data.items[data.offsets[u]:ts.positions[r]].tolist())
                assert int(ts.items[r]) not in hist  # the split dropped repeat targets
                assert per["full_candidates"][r] == data.n_items - len(hist)
        # per-instance ranks give back the logged means
        got = evaluate(pop, data, "test", ks=(10,))
        assert metrics_from_ranks(torch.from_numpy(per["full_rank"]), torch.from_numpy(per["full_candidates"]),
                                  (10,))["hr_at_10"] == pytest.approx(got["full_hr_at_10"])


def test_history_baseline_no_longer_gets_the_target_revealed(taobao):
    data = taobao["candidates"]
    ts = data.targets["test"]
    share = float(ts.repeat.mean())
    model = HistoryModel(data.n_items).fit(data)
    fair = evaluate(model, data, "test", ks=(10,))
    # The flawed protocol of before (history dropped from the candidates but the target kept) reveals a repeat
    # target: the history rule then hits nearly every repeat target.
    leaky = evaluate(model, data, "test", ks=(10,), protocols=("full",), exclude_history=True)
    assert leaky["full_hr_at_10"] >= 0.95 * share
    assert fair["full_hr_at_10"] < share - 0.05, (fair, share)
    # On repeat targets the rule is strong, on new ones it is the popularity ranking.
    repeat = evaluate(model, data, "test", ks=(10,), subset=ts.repeat)
    new = evaluate(model, data, "test", ks=(10,), subset=~ts.repeat)
    assert repeat["full_hr_at_10"] > 0.3 > new["full_hr_at_10"]
    pop_new = evaluate(PopularityModel(data.n_items).fit(data), data, "test", ks=(10,), subset=~ts.repeat)
    assert new["full_hr_at_10"] == pytest.approx(pop_new["full_hr_at_10"], abs=0.02)


def test_training_negatives_avoid_the_history_when_it_is_excluded():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 30, size=(40, 12))
    avoid = np.concatenate([rng.integers(0, 30, size=(40, 12)), labels], axis=1)
    neg = sample_negatives(labels, 30, np.random.default_rng(1), avoid=avoid)
    for r in range(40):
        assert not set(neg[r].tolist()) & (set(avoid[r].tolist()) - {0})
    # without avoid the draws are the ones of before (candidates: bit-identical training)
    a = sample_negatives(labels, 30, np.random.default_rng(1))
    assert not np.any(a == labels)
    with pytest.raises(ValueError, match="no negative left"):
        sample_negatives(np.ones((1, 2), np.int64), 3, rng, avoid=np.array([[1, 2, 3]]))
