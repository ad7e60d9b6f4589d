"""Cleaning rules and the warm/cold split, on the real Taobao head and on small tables built here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.data.clean import CleanConfig, clean_interactions
from components.data.schema import behavior_array
from components.data.split import SplitConfig, SplitError, build_sequences

TAOBAO_WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00")
NAMES = ("click", "cart", "fav", "buy")


def table(users, items, behaviors, ts, names=NAMES) -> pa.Table:
    codes = pa.array([names.index(b) for b in behaviors], pa.int8())
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                     "behavior": behavior_array(codes, names), "timestamp": pa.array(ts, pa.int64())})


@pytest.fixture(scope="module")
def taobao_clean(taobao_head):
    from components.data.readers import read_dataset

    raw = read_dataset("taobao", taobao_head).interactions
    return clean_interactions(raw, CleanConfig(time_window=TAOBAO_WINDOW))


def test_clean_real_taobao_drops_the_35_rows_outside_the_window(taobao_clean):
    steps = {s["rule"]: s for s in taobao_clean.report["steps"]}
    assert steps["time_window"]["dropped"] == 35
    t = taobao_clean.interactions
    users, ts = t["user_id"].to_numpy(), t["timestamp"].to_numpy()
    assert users.min() == 1 and users.max() == len(taobao_clean.user_ids)
    # sorted by (user, time)
    assert np.all((np.diff(users) > 0) | ((np.diff(users) == 0) & (np.diff(ts) >= 0)))


def test_duplicates_window_and_kcore():
    t = table(users=[1, 1, 1, 2, 2, 3, 3, 3],
              items=[10, 10, 11, 10, 11, 10, 11, 12],
              behaviors=["click", "click", "buy", "click", "buy", "click", "click", "click"],
              ts=[100, 100, 200, 300, 400, 500, 600, 10_000])
    r = clean_interactions(t, CleanConfig(time_window=("1970-01-01T00:00:00+00:00", "1970-01-01T01:00:00+00:00"),
                                          min_user_events=2, min_item_events=2))
    steps = {s["rule"].split("(")[0]: s["dropped"] for s in r.report["steps"]}
    assert steps == {"duplicates": 1, "time_window": 1, "kcore": 0}
    assert r.interactions.num_rows == 6
    r2 = clean_interactions(t, CleanConfig(min_user_events=3, min_item_events=1))
    assert r2.user_ids.to_pylist() == ["3"]  # users 1 and 2 have 2 distinct events after dedup


def test_equal_timestamps_keep_file_order():
    # IJCAI-like: day-level stamps; within a day the file order is the only order there is.
    t = table(users=[7, 7, 7, 7], items=[3, 1, 2, 4], behaviors=["click"] * 4, ts=[50, 50, 50, 10])
    r = clean_interactions(t, CleanConfig())
    original = r.item_ids.to_pylist()
    assert [original[i - 1] for i in r.interactions["item_id"].to_pylist()] == ["4", "3", "1", "2"]


def _check_instances(d):
    """Targets, histories, repeat flags and negatives against a per-instance reference, for either
    ``history_items`` setting."""
    excluded = d.meta["history_items"] == "excluded"
    for name, ts in d.targets.items():
        assert (d.items[ts.positions] == ts.items).all(), name
        assert np.isin(d.behaviors[ts.positions], d.target_behaviors).all(), name
        u = ts.users.astype(np.int64)
        assert ((ts.positions >= d.offsets[u]) & (ts.positions < d.offsets[u + 1])).all(), name
        for r in range(len(ts)):
            hist = set(d.items[d.offsets[u[r]]:d.offsets[u[r] + 1]].tolist())
            before = set() if ts.zero_shot[r] else set(d.items[d.offsets[u[r]]:ts.positions[r]].tolist())
            assert bool(ts.repeat[r]) == (int(ts.items[r]) in before), (name, r)
            negs = ts.negatives[r].tolist()
            assert len(set(negs)) == len(negs) and int(ts.items[r]) not in negs, (name, r)
            assert min(negs) >= 1 and max(negs) <= d.n_items
            if excluded:  # never-touched items only, and no repeat target is left
                assert not hist & set(negs) and not ts.repeat[r], (name, r)


def test_split_real_taobao_natural_cold(taobao_clean):
    d = build_sequences(taobao_clean, None, SplitConfig(target_behaviors=["buy"], cold_threshold=5, seed=1))
    assert d.meta["cold_mode"] == "natural"
    assert len(d.warm_users) == 119  # users with >= 5 buys inside the window
    assert len(d.targets["valid"]) == len(d.targets["test"]) == len(d.warm_users)
    assert set(d.cold_tune_users) .isdisjoint(d.cold_test_users) and set(d.warm_users).isdisjoint(d.cold_tune_users)
    n_cold = len(d.cold_tune_users) + len(d.cold_test_users)
    assert abs(len(d.cold_tune_users) - 0.8 * n_cold) <= 1
    zs = d.targets["cold_test"].zero_shot
    assert zs.sum() == len(d.cold_test_users)
    # the training prefix of a warm user ends right before its validation target
    np.testing.assert_array_equal(d.train_end[d.warm_users], d.targets["valid"].positions)
    assert (d.targets["test"].positions > d.targets["valid"].positions).all()
    _check_instances(d)


def test_split_is_deterministic_and_seeded(taobao_clean):
    cfg = SplitConfig(target_behaviors=["buy"], cold_threshold=5, seed=7)
    a, b = build_sequences(taobao_clean, None, cfg), build_sequences(taobao_clean, None, cfg)
    for name in a.targets:
        np.testing.assert_array_equal(a.targets[name].negatives, b.targets[name].negatives)
        np.testing.assert_array_equal(a.targets[name].users, b.targets[name].users)
    np.testing.assert_array_equal(a.cold_test_users, b.cold_test_users)
    c = build_sequences(taobao_clean, None, SplitConfig(target_behaviors=["buy"], cold_threshold=5, seed=8))
    assert not np.array_equal(a.targets["test"].negatives, c.targets["test"].negatives)


def test_simulated_cold_users_when_none_is_naturally_cold():
    rng = np.random.default_rng(0)
    n_users, per_user, n_items = 50, 25, 409  # like ML-1M: everybody has >= 20 ratings
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    items = np.concatenate([rng.choice(np.arange(1, n_items + 1), per_user, replace=False) for _ in range(n_users)])
    ts = np.tile(np.arange(per_user), n_users)
    names = ("rating_low", "rating_mid", "rating_high")
    t = table(users, items, [names[i] for i in rng.integers(0, 3, users.size)], ts, names=names)
    d = build_sequences(clean_interactions(t, CleanConfig()), None, SplitConfig(cold_threshold=10, seed=3))
    assert d.meta["cold_mode"] == "simulated"
    cold = np.concatenate([d.cold_tune_users, d.cold_test_users])
    assert len(cold) == 10 and len(d.warm_users) == 40
    lengths = d.offsets[cold + 1] - d.offsets[cold]
    assert lengths.min() >= 2 and lengths.max() <= 9  # cut to fewer than the threshold
    _check_instances(d)  # negatives also avoid what the cut removed: checked against the kept part here
    with pytest.raises(SplitError, match="no warm users"):
        build_sequences(clean_interactions(t, CleanConfig()), None,
                        SplitConfig(cold_threshold=30, cold_mode="natural"))


def test_too_few_free_items_for_the_negatives():
    t = table(users=[1] * 6, items=[1, 2, 3, 4, 5, 6], behaviors=["buy"] * 6, ts=list(range(6)))
    with pytest.raises(SplitError, match="negatives"):
        build_sequences(clean_interactions(t, CleanConfig()), None,
                        SplitConfig(cold_threshold=3, n_negatives=5, history_items="excluded"))
    with pytest.raises(SplitError, match="negatives"):  # every item but the target: 5 left, 6 asked
        build_sequences(clean_interactions(t, CleanConfig()), None, SplitConfig(cold_threshold=3, n_negatives=6))
    ok = build_sequences(clean_interactions(t, CleanConfig()), None, SplitConfig(cold_threshold=3, n_negatives=5))
    assert ok.meta["history_items"] == "candidates"


def test_history_items_defaults_and_the_repeat_share_of_the_taobao_head(taobao_clean):
    from components.data.datasets import default_history_items

    assert default_history_items("ml1m") == "excluded"
    assert {default_history_items(d) for d in ("taobao", "ijcai15", "cikm2019", "generic")} == {"candidates"}
    cfg = dict(target_behaviors=["buy"], cold_threshold=5, seed=1)
    cand = build_sequences(taobao_clean, None, SplitConfig(**cfg), dataset="taobao")
    assert cand.meta["history_items"] == "candidates"
    test = cand.targets["test"]
    # Most last buys on the head are items the user touched before (issue 11 measured 65.5% on the raw head).
    assert 0.5 < test.repeat.mean() < 0.8 and cand.meta["repeat_share"]["test"] == pytest.approx(test.repeat.mean())
    # Negatives may be the user's own history items now (they are candidates), never the target.
    hist_negs = sum(len(set(test.negatives[r]) & set(cand.items[cand.offsets[u]:cand.offsets[u + 1]].tolist()))
                    for r, u in enumerate(test.users.astype(np.int64)))
    assert hist_negs > 0
    _check_instances(cand)
    with pytest.raises(SplitError, match="history_items"):
        build_sequences(taobao_clean, None, SplitConfig(**cfg, history_items="sometimes"))
    excl = build_sequences(taobao_clean, None, SplitConfig(**cfg, history_items="excluded"), dataset="taobao")
    dropped = excl.meta["repeat_targets_dropped"]
    assert dropped["test"] == int(test.repeat.sum()) and len(excl.targets["test"]) == len(test) - dropped["test"]
    assert not excl.targets["test"].repeat.any()
    _check_instances(excl)


def test_dataset_round_trip(tmp_path, taobao_clean):
    from components.data.sequences import SequenceDataset

    d = build_sequences(taobao_clean, None, SplitConfig(target_behaviors=["buy"], cold_threshold=5))
    d.save(tmp_path)
    e = SequenceDataset.load(tmp_path)
    assert e.meta == d.meta and e.behavior_names == d.behavior_names
    np.testing.assert_array_equal(e.targets["cold_test"].negatives, d.targets["cold_test"].negatives)
    np.testing.assert_array_equal(e.targets["test"].repeat, d.targets["test"].repeat)
    np.testing.assert_array_equal(e.item_ids, d.item_ids)
    # A split saved before the repeat flag existed gets it recomputed on load.
    with np.load(tmp_path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.endswith(".repeat")}
    np.savez(tmp_path / "arrays.npz", **arrays)
    old = SequenceDataset.load(tmp_path)
    for name in d.targets:
        np.testing.assert_array_equal(old.targets[name].repeat, d.targets[name].repeat)


def test_duplicates_match_a_pandas_reference_on_many_ties():
    # Few users, few timestamps, few items: lots of equal (user, time) runs with non-adjacent copies (A, B, A).
    import pandas as pd

    rng = np.random.default_rng(5)
    n = 5000
    users, items = rng.integers(1, 8, n), rng.integers(1, 6, n)
    ts, beh = rng.integers(0, 20, n), rng.integers(0, 4, n)
    t = table(users.tolist(), items.tolist(), [NAMES[b] for b in beh], ts.tolist())
    r = clean_interactions(t, CleanConfig())
    ref = pd.DataFrame({"u": users, "i": items, "b": beh, "t": ts, "pos": np.arange(n)})
    ref = ref[~ref.duplicated(["u", "i", "b", "t"], keep="first")].sort_values(["u", "t", "pos"], kind="stable")
    uid = np.array(r.user_ids.to_pylist(), dtype=np.int64)
    iid = np.array(r.item_ids.to_pylist(), dtype=np.int64)
    got = np.stack([uid[r.interactions["user_id"].to_numpy() - 1], iid[r.interactions["item_id"].to_numpy() - 1],
                    r.interactions["timestamp"].to_numpy()], axis=1)
    np.testing.assert_array_equal(got, ref[["u", "i", "t"]].to_numpy())
