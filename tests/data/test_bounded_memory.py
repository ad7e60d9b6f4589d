"""The memory-bounded data path gives the same arrays as the plain numpy formulations it replaced: the stable
(user, time) sort of cleaning in each of its regimes, columns chunked differently, the first (user, item)
occurrences computed slice by slice, and the negative sampler checking its candidates in row blocks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.data.clean import CleanConfig, _sort_by_user_time, clean_interactions
from components.data.schema import behavior_array
from components.data.sequences import _first_pairs
from components.data.split import _NegativeSampler, _unique_pairs

NAMES = ("click", "cart", "fav", "buy")


def _reference_sort(users, ts, items, beh):
    order = np.lexsort((ts, users))  # stable: ties keep input order
    return users[order], ts[order], items[order], beh[order]


@pytest.mark.parametrize("n_users,span,n,grouped", [
    (50, 1_000, 20_000, False),  # key and position packed together: one in-place sort
    (300, 2**45, 5_000, False),  # too wide for one group: groups of consecutive users
    (300, 2**45, 5_000, True),  # the same with rows already grouped by user: each group a slice
    (100, 2**55, 5_000, False),  # too wide for any group: stable argsort of the key
    (1_000, 2**60, 5_000, False),  # too wide for one key: lexsort
])
def test_sort_by_user_time_is_the_stable_lexsort_in_every_regime(n_users, span, n, grouped):
    rng = np.random.default_rng(n_users)
    users = rng.integers(0, n_users, n).astype(np.int32)
    users[:2] = [0, n_users - 1]
    if grouped:
        users.sort()
    # few distinct timestamps: many ties, which must keep input order
    ts = (rng.choice([0, 1, span // 3, span - 1], n) + 1_500_000_000).astype(np.int64)
    items = rng.integers(0, 40, n).astype(np.int32)
    beh = np.arange(n, dtype=np.int64).astype(np.int8)  # marks input order (mod 256) to catch tie swaps
    pos = np.arange(n, dtype=np.int32)  # input order, carried as the "items" of a second call
    want = _reference_sort(users, ts, pos, beh)
    got = [users.copy(), ts.copy(), pos.copy(), beh.copy()]
    _sort_by_user_time(got)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    got = [users.copy(), ts.copy(), items.copy(), beh.copy()]
    _sort_by_user_time(got)
    np.testing.assert_array_equal(got[2], items[want[2]])


def test_clean_is_independent_of_how_the_columns_are_chunked():
    rng = np.random.default_rng(0)
    n = 3_000
    users = rng.integers(1, 60, n) * 7
    items = rng.integers(1, 200, n) * 3
    ts = rng.choice(np.arange(1_511_539_000, 1_511_540_000), n)
    codes = rng.integers(0, 4, n).astype(np.int8)
    users[-40:], items[-40:], ts[-40:], codes[-40:] = users[:40], items[:40], ts[:40], codes[:40]  # duplicates

    def chunked(values, cuts, typ):
        return pa.chunked_array([pa.array(values[a:b], typ) for a, b in zip([0, *cuts], [*cuts, n])], typ)

    beh = behavior_array(pa.array(codes, pa.int8()), NAMES)
    one = pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                    "behavior": beh, "timestamp": pa.array(ts, pa.int64())})
    many = pa.table({"user_id": chunked(users, [5, 1000, 1001], pa.int64()),
                     "item_id": chunked(items, [2500], pa.int64()),
                     "behavior": pa.chunked_array([beh.slice(0, 17), beh.slice(17)]),
                     "timestamp": chunked(ts, [100, 200, 2999], pa.int64())})
    cfg = CleanConfig(time_window=("2017-11-25T00:00:00+08:00", "2017-11-25T00:10:00+08:00"), min_user_events=2)
    a, b = clean_interactions(one, cfg), clean_interactions(many, cfg)
    assert a.interactions.equals(b.interactions)
    assert a.user_ids.equals(b.user_ids) and a.item_ids.equals(b.item_ids) and a.report == b.report
    assert a.report["steps"][1]["dropped"] > 0 and a.report["steps"][0]["dropped"] > 0  # copies found, window cut


def test_first_pairs_slice_by_slice_equals_numpy_unique():
    rng = np.random.default_rng(1)
    lengths = np.array([1, 3, 50, 2, 700, 9, 1, 120])  # user 4 is longer than a slice
    users = np.repeat(np.arange(1, lengths.size + 1), lengths).astype(np.int64)
    items = rng.integers(1, 30, users.size).astype(np.int32)
    want = np.unique(users * 31 + items, return_index=True)
    for slice_rows in (1, 7, 64, 10_000):
        got = _first_pairs(users, items, 30, slice_rows=slice_rows)
        for w, g in zip(want, got):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
    shuffled = rng.permutation(users.size)  # not grouped by user: the np.unique path
    for w, g in zip(np.unique(users[shuffled] * 31 + items[shuffled], return_index=True),
                    _first_pairs(users[shuffled], items[shuffled], 30)):
        np.testing.assert_array_equal(g, w)


def test_unique_pairs_equals_numpy_unique():
    rng = np.random.default_rng(2)
    users, items = rng.integers(0, 50, 5_000), rng.integers(1, 90, 5_000).astype(np.int32)
    np.testing.assert_array_equal(_unique_pairs(users, items, 90), np.unique(users * 91 + items))


class _SmallBlocks(_NegativeSampler):
    BLOCK_ROWS = 7


@pytest.mark.parametrize("excluded", [False, True])
def test_negative_sampler_blocks_do_not_change_the_draws(excluded):
    rng = np.random.default_rng(3)
    n_items, users = 60, np.sort(rng.integers(1, 40, 100)).astype(np.int32)
    seen = _unique_pairs(rng.integers(1, 40, 800), rng.integers(1, n_items + 1, 800), n_items) if excluded else None
    positions = np.arange(users.size, dtype=np.int64)
    items = rng.integers(1, n_items + 1, users.size).astype(np.int32)
    a = _NegativeSampler(seen, n_items, 20, np.random.default_rng(9)).target_set(users, positions, items)
    b = _SmallBlocks(seen, n_items, 20, np.random.default_rng(9)).target_set(users, positions, items)
    np.testing.assert_array_equal(a.negatives, b.negatives)


def test_first_index_of_queried_pairs_equals_the_first_occurrence_lookup():
    from components.data import split as split_module
    from components.data.sequences import first_occurrence

    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(1, 41), rng.integers(1, 80, 40)).astype(np.int32)
    items = rng.integers(1, 25, users.size).astype(np.int32)
    q_users = rng.integers(0, 43, 500).astype(np.int32)  # some users without events
    q_items = rng.integers(1, 26, 500).astype(np.int32)  # and an item no event has
    want = first_occurrence(users, items, 25)(q_users, q_items)
    assert (want < np.iinfo(np.int64).max).any() and (want == np.iinfo(np.int64).max).any()
    for slice_rows in (1, 13, 1 << 20):
        np.testing.assert_array_equal(split_module._first_index(users, items, 25, q_users, q_items, slice_rows),
                                      want)


@pytest.mark.parametrize("spread", [3, 10**15])  # narrow ids: one table over the range; wide: the hash path
def test_id_codes_are_ranks_of_the_sorted_distinct_ids_in_both_encoders(spread):
    from components.data.clean import _encode

    rng = np.random.default_rng(5)
    ids = rng.integers(-50, 3_000, 10_000) * spread
    keep = rng.random(ids.size) < 0.7
    col = pa.chunked_array([pa.array(ids[:4_000], pa.int64()), pa.array(ids[4_000:], pa.int64())])
    codes, values = _encode(col, keep, int(keep.sum()))
    distinct, inverse = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(codes, inverse[keep])
    assert codes.dtype == np.int32
    assert values.equals(pa.array(distinct, pa.int64()).cast(pa.string()))
