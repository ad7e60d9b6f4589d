"""Known-answer tests for components.metrics.significance: per-instance metrics, paired bootstrap, t-test, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.metrics.ranking import metrics_from_ranks
from components.metrics.significance import (
    Claim,
    ComparisonRow,
    align_by_index,
    compare_paired,
    compare_stratified,
    instance_metric,
    load_claims,
    markdown_table,
    paired_t_test,
    stratified_t_test,
    t_two_sided_p,
    verdict,
)


def test_instance_metrics_average_to_the_pipeline_metrics():
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 100, size=500)
    ref = metrics_from_ranks(torch.from_numpy(ranks), 100, ks=(5, 10))
    for name in ("hr_at_5", "hr_at_10", "ndcg_at_5", "ndcg_at_10", "mrr", "auc"):
        assert instance_metric(ranks, name, 100).mean() == pytest.approx(ref[name], abs=1e-12), name
    cands = rng.integers(100, 200, size=500)
    ref = metrics_from_ranks(torch.from_numpy(ranks), torch.from_numpy(cands), ks=(10,))
    assert instance_metric(ranks, "auc", cands).mean() == pytest.approx(ref["auc"], abs=1e-12)


def test_instance_metric_values_by_hand():
    r = np.array([0, 1, 9, 10])
    assert instance_metric(r, "hr_at_10").tolist() == [1, 1, 1, 0]
    assert instance_metric(r, "ndcg_at_10").tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0])
    assert instance_metric(r, "mrr").tolist() == pytest.approx([1.0, 0.5, 0.1, 1 / 11])
    assert instance_metric(r, "auc", 11).tolist() == pytest.approx([1.0, 0.9, 0.1, 0.0])
    with pytest.raises(ValueError, match="auc needs"):
        instance_metric(r, "auc")
    with pytest.raises(ValueError, match="unknown metric"):
        instance_metric(r, "recall")
    with pytest.raises(ValueError, match="0..n_candidates-1"):
        instance_metric(r, "hr_at_10", 10)


def test_identical_methods_give_a_ci_around_zero_and_p_one():
    a = np.random.default_rng(1).random(300)
    c = compare_paired(a, a.copy(), n_resamples=500)
    assert c.diff == 0.0 and c.diff_low == 0.0 and c.diff_high == 0.0
    assert c.rel_low <= 0.0 <= c.rel_high
    assert c.p == 1.0


def test_noisy_equal_methods_ci_contains_zero():
    rng = np.random.default_rng(2)
    a = rng.random(400)
    b = a + rng.normal(0, 0.2, 400)
    b -= (b - a).mean()  # exactly the same mean
    c = compare_paired(a, b, n_resamples=1000)
    assert c.diff == pytest.approx(0.0, abs=1e-12)
    assert c.diff_low < 0.0 < c.diff_high
    assert c.p == pytest.approx(1.0, abs=1e-9)


def test_constant_shift_gives_a_ci_at_the_shift():
    rng = np.random.default_rng(3)
    b = rng.random(200) + 1.0
    a = b + 0.1
    c = compare_paired(a, b, n_resamples=500)
    assert c.diff == pytest.approx(0.1) and c.diff_low == pytest.approx(0.1) and c.diff_high == pytest.approx(0.1)
    assert c.p == pytest.approx(0.0, abs=1e-12)
    assert c.rel == pytest.approx(a.mean() / b.mean() - 1)
    assert c.rel_low <= c.rel <= c.rel_high


def test_bootstrap_is_seeded_and_matches_the_normal_interval():
    rng = np.random.default_rng(4)
    b = rng.random(2000)
    a = b + rng.normal(0.05, 0.3, 2000)
    c1 = compare_paired(a, b, seed=7)
    assert c1 == compare_paired(a, b, seed=7)
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert c1.diff_low == pytest.approx(d.mean() - half, abs=0.004)
    assert c1.diff_high == pytest.approx(d.mean() + half, abs=0.004)


def test_t_test_against_known_values():
    # Student t, df = 10: P(|T| >= 2.228) = 0.05; df = 1 (Cauchy): P(|T| >= 1) = 0.5.
    assert t_two_sided_p(2.2281388519649385, 10) == pytest.approx(0.05, abs=1e-9)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert t_two_sided_p(1.959963984540054, float("inf")) == pytest.approx(0.05, abs=1e-12)
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([0.5, 2.5, 2.0, 3.0])  # d = 0.5, -0.5, 1, 1: mean 0.5, sd sqrt(0.5)
    t = paired_t_test(a, b)
    assert t.df == 3 and t.t == pytest.approx(0.5 / (math.sqrt(0.5) / 2))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert t.p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, abs=1e-10)
    assert t_two_sided_p(1.3, 37.5) == pytest.approx(2 * scipy_stats.t.sf(1.3, 37.5), abs=1e-10)


def test_stratified_seeds_weigh_equally_and_pair_only_within_a_seed():
    rng = np.random.default_rng(5)
    strata = []
    for n, shift in ((100, 0.02), (400, 0.06)):
        b = rng.random(n)
        strata.append((b + shift, b))
    c = compare_stratified(strata, n_resamples=300)
    assert c.per_seed_diff == pytest.approx((0.02, 0.06))
    assert c.diff == pytest.approx(0.04)  # the seed average, not the instance-weighted 0.052
    assert c.diff_low == pytest.approx(0.04) and c.diff_high == pytest.approx(0.04)
    assert c.n == 500 and c.per_seed_n == (100, 400)
    mean_a = np.mean([s[0].mean() for s in strata])
    mean_b = np.mean([s[1].mean() for s in strata])
    assert c.rel == pytest.approx(mean_a / mean_b - 1)
    # One stratum: the stratified t-test is the paired t-test.
    a, b = rng.random(50), rng.random(50)
    assert stratified_t_test([a - b]) == paired_t_test(a, b)


def test_mismatched_or_empty_pairs_are_errors():
    with pytest.raises(ValueError, match="same length"):
        compare_paired(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no instances"):
        compare_paired(np.zeros(0), np.zeros(0))


def test_align_by_index_keeps_common_rows_in_order():
    idx, a, b = align_by_index(np.array([3, 1, 2]), np.array([30, 10, 20]), np.array([1, 2, 4]), np.array([1, 2, 4]))
    assert idx.tolist() == [1, 2] and a.tolist() == [10, 20] and b.tolist() == [1, 2]


@pytest.mark.parametrize("claim, low, high, label, note", [
    (0.0575, 0.02, 0.09, "reproduced", ""),  # above 0, claim inside
    (0.0575, 0.07, 0.12, "reproduced", ""),  # larger gain than claimed
    (0.0575, 0.01, 0.04, "not reproduced", "direction holds: smaller gain"),
    (0.0575, -0.03, 0.04, "not reproduced", ""),  # the claim's size is ruled out, 0 is not
    (0.0575, -0.09, -0.02, "not reproduced", "direction reversed"),
    (0.0575, -0.02, 0.08, "inconclusive", ""),  # contains 0 and the claim
    (0.0575, 0.0, 0.0575, "inconclusive", ""),  # touching 0 is not above 0
    (0.0575, float("nan"), float("nan"), "inconclusive", ""),
])
def test_verdict_table(claim, low, high, label, note):
    v = verdict(claim, low, high)
    assert v.label == label
    assert note in v.detail
    if label == "not reproduced" and low <= 0:
        assert "direction holds" not in v.detail


def test_claims_and_markdown_table():
    claims = load_claims('{"end4rec": {"hr_at_10": 0.0575}}', {"cpl": {"ndcg_at_10": Claim(0.1044)}})
    assert claims["end4rec"]["hr_at_10"].value == 0.0575 and claims["cpl"]["ndcg_at_10"].value == 0.1044
    assert load_claims("none", claims) == {}
    rng = np.random.default_rng(6)
    b = rng.random(100)
    c = compare_stratified([(b + 0.1, b), (b + 0.1, b)], n_resamples=200)
    rows = [ComparisonRow("end4rec", "sasrec", "hr_at_10", "full", c, claims["end4rec"]["hr_at_10"])]
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "HR@10" in table and "+5.75%" in table and "**reproduced**" in table
    assert rows[0].to_dict()["verdict"] == "reproduced"


def test_claims_apply_only_to_their_protocol_and_group():
    c = Claim(0.0078, "PPR", protocol="sampled", group="cold_fewshot_all")
    assert c.applies("sampled99", "cold_fewshot_all")
    assert not c.applies("full", "cold_fewshot_all") and not c.applies("sampled99", "cold_zeroshot")
    assert Claim(0.1).applies("full", "anything")
    loaded = load_claims('{"x": {"ndcg_at_5": {"value": 0.1, "protocol": "full"}}}', {})
    assert loaded["x"]["ndcg_at_5"] == Claim(0.1, protocol="full")
    with pytest.raises(ValueError, match="unknown metric"):
        load_claims('{"x": {"recall_at_5": 0.1}}', {})


@pytest.mark.parametrize("mode", ["excluded", "candidates"])
def test_fewshot_all_targets_every_target_after_the_first(mode):
    """bench.tuning's PPR few-shot set: every target event after each cold test user's first, the split's few-shot
    row keeping its stored negatives, the others drawn (seeded) without the target (and, under ``excluded``,
    without the user's items; repeat targets dropped there)."""
    from bench.tuning import fewshot_all_targets
    from tests.models.synthetic import make_chain_dataset

    data = make_chain_dataset(n_warm=20, n_cold_tune=5, n_cold_test=25, n_items=211, n_negatives=20, seed=3)
    data.meta["history_items"] = mode
    ts = fewshot_all_targets(data, seed=0)
    is_target = np.isin(data.behaviors, data.target_behaviors)
    expected = []
    for u in data.cold_test_users:
        lo, hi = int(data.offsets[u]), int(data.offsets[u + 1])
        for p in (lo + np.flatnonzero(is_target[lo:hi]))[1:]:
            if mode == "candidates" or data.items[p] not in data.items[lo:p]:
                expected.append((int(u), int(p)))
    assert list(zip(ts.users.tolist(), ts.positions.tolist())) == expected and len(expected) > 25
    assert not ts.zero_shot.any() and np.array_equal(ts.items, data.items[ts.positions])
    stored = data.targets["cold_test"]
    row = {(int(u), int(p)): i for i, (u, p) in enumerate(zip(ts.users, ts.positions))}
    reused = 0
    for j in np.flatnonzero(~stored.zero_shot):
        i = row.get((int(stored.users[j]), int(stored.positions[j])))
        if i is not None:
            assert np.array_equal(ts.negatives[i], stored.negatives[j])
            reused += 1
    assert reused > 0
    for i, (u, target) in enumerate(zip(ts.users, ts.items)):
        neg = ts.negatives[i]
        assert len(set(neg.tolist())) == neg.size and target not in neg and neg.min() >= 1
        if mode == "excluded":
            assert not np.isin(neg, data.items[data.offsets[u]:data.offsets[u + 1]]).any()
    assert np.array_equal(fewshot_all_targets(data, seed=0).negatives, ts.negatives)  # seeded
