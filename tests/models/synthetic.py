"""Small, seeded SequenceDatasets with structure a sequential model can learn and a popularity model cannot.

Users walk a hidden cycle over all items (a random permutation): from the item at cycle position p, the next
event is at p + b, where b is the behavior code of the current event (so a click steps 1, a buy steps 2): the
order of items *and* the behavior channel carry the signal.  With probability 1 - p_follow a user jumps to a
random place instead (noise).  Item popularity is flat, so popularity ranking is near chance.

The split follows components/data/split.py's conventions exactly: warm users' last target event is ``test``, the
one before ``valid``, their training prefix ends at the valid target; a cold tuning user's last target event is
``cold_valid`` (prefix = everything before it); a cold test user gives a few-shot instance (last target event, if it
has history) and a zero-shot instance (first target event, empty history) and trains on nothing.  Negatives are
distinct items the user never touched.  ``check_contract`` verifies all of it (and is reused on real splits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.sequences import SequenceDataset, TargetSet


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run a test module's torch work on one thread, then restore the setting.

    The tensors here are tiny, so a second thread buys nothing, and on a shared 2-core machine two OpenMP threads
    stall badly whenever another process holds a core (seen: 6 s instead of 0.12 s per epoch).  Test modules
    import this fixture by name to use it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_chain_dataset(
    *,
    n_warm: int = 257,
    n_cold_tune: int = 30,
    n_cold_test: int = 30,
    n_items: int = 452,
    n_behaviors: int = 2,
    warm_len: tuple[int, int] = (12, 40),
    cold_len: tuple[int, int] = (2, 9),
    p_follow: float = 0.9,
    p_target: float = 0.5,
    n_negatives: int = 99,
    seed: int = 0,
) -> SequenceDataset:
    """A chain-walk dataset; the last behavior code is the target behavior (like buy).

    The defaults give 317 users (257 warm) and 452 items: counts that differ and are no multiples of each other, so
    an array sized or indexed by users where items are meant (or the reverse) breaks a shape or an index.  Callers
    that choose their own sizes keep them apart the same way."""
    rng = np.random.default_rng(seed)
    n_users = n_warm + n_cold_tune + n_cold_test
    target = n_behaviors
    roles = rng.permutation(np.repeat([0, 1, 2], [n_warm, n_cold_tune, n_cold_test]))  # index = user - 1
    lo = np.where(roles == 0, warm_len[0], cold_len[0])
    hi = np.where(roles == 0, warm_len[1], cold_len[1])
    lengths = rng.integers(lo, hi + 1)  # [n_users]
    T = int(lengths.max())

    # Behaviors first: every user needs target events, warm users three (train, valid, test), cold users one,
    # so users short of them get their last one or three events forced to the target behavior.
    beh = np.where(rng.random((n_users, T)) < p_target, target,
                   rng.integers(1, max(n_behaviors, 2), size=(n_users, T))).astype(np.int8)
    valid = np.arange(T)[None, :] < lengths[:, None]  # [n_users, T]
    need = np.where(roles == 0, 3, 1)
    short = ((beh == target) & valid).sum(1) < need
    for k in range(3):
        idx = lengths - 1 - k
        fix = short & (k < need) & (idx >= 0)
        beh[np.flatnonzero(fix), idx[fix]] = target
    # Then walk every user at once, one time step per iteration: step = behavior code of the current event.
    cycle = rng.permutation(n_items) + 1  # cycle[p] = item id at cycle position p
    pos = np.empty((n_users, T), np.int64)
    pos[:, 0] = rng.integers(0, n_items, n_users)
    for t in range(1, T):
        follow = rng.random(n_users) < p_follow
        pos[:, t] = np.where(follow, pos[:, t - 1] + beh[:, t - 1], rng.integers(0, n_items, n_users)) % n_items
    items = cycle[pos]

    offsets = np.zeros(n_users + 2, np.int64)
    offsets[2:] = np.cumsum(lengths)
    flat_items = items[valid].astype(np.int32)
    flat_beh = beh[valid].astype(np.int8)
    timestamps = (1_600_000_000 + np.arange(flat_items.size, dtype=np.int64) * 60)
    user_of_event = np.repeat(np.arange(1, n_users + 1), lengths)

    is_t = np.isin(flat_beh, [target])
    tpos = np.flatnonzero(is_t)
    first_t = np.searchsorted(user_of_event[tpos], np.arange(n_users + 2))
    last_t = first_t[1:] - 1  # [n_users + 1]: index into tpos of user u's last target event

    warm = np.flatnonzero(roles == 0) + 1
    tune = np.flatnonzero(roles == 1) + 1
    test = np.flatnonzero(roles == 2) + 1
    valid_pos, test_pos = tpos[last_t[warm] - 1], tpos[last_t[warm]]
    cold_valid_pos = tpos[last_t[tune]]
    few_pos = tpos[last_t[test]]
    has_hist = few_pos > offsets[test]
    zero_pos = tpos[first_t[test]]
    train_end = offsets[:-1].copy()
    train_end[warm] = valid_pos
    train_end[tune] = cold_valid_pos

    def target_set(users: np.ndarray, positions: np.ndarray, zero_shot: np.ndarray | None = None) -> TargetSet:
        # Random keys per (instance, item), items the user touched pushed past 1: the m smallest keys are then a
        # uniform sample of distinct untouched items.  Chunked so memory stays at chunk x n_items floats.
        negs = np.zeros((users.size, n_negatives), np.int32)
        for lo in range(0, users.size, 1024):
            u = users[lo:lo + 1024]
            keys = rng.random((u.size, n_items + 1), dtype=np.float32)
            keys[:, 0] = 2.0
            rows = np.repeat(np.arange(u.size), lengths[u - 1])
            keys[rows, np.concatenate([flat_items[offsets[x]:offsets[x + 1]] for x in u])] = 2.0
            part = np.argpartition(keys, n_negatives, axis=1)[:, :n_negatives]
            if np.any(np.take_along_axis(keys, part, axis=1) >= 2.0):
                raise ValueError(f"make_chain_dataset: a user touched more than n_items - n_negatives items; "
                                 f"raise n_items above {n_negatives} + the longest history")
            negs[lo:lo + 1024] = part
        return TargetSet(users=users.astype(np.int32), positions=positions.astype(np.int64),
                         items=flat_items[positions].astype(np.int32), negatives=negs,
                         zero_shot=np.zeros(users.size, bool) if zero_shot is None else zero_shot)

    targets = {
        "valid": target_set(warm, valid_pos),
        "test": target_set(warm, test_pos),
        "cold_valid": target_set(tune, cold_valid_pos),
        "cold_test": target_set(np.concatenate([test[has_hist], test]), np.concatenate([few_pos[has_hist], zero_pos]),
                                np.concatenate([np.zeros(int(has_hist.sum()), bool), np.ones(test.size, bool)])),
    }
    names = [f"b{c}" for c in range(1, n_behaviors)] + ["buy"]
    return SequenceDataset(
        n_users=n_users, n_items=n_items, behavior_names=names, target_behaviors=[target], offsets=offsets,
        items=flat_items, behaviors=flat_beh, timestamps=timestamps, train_end=train_end,
        warm_users=warm.astype(np.int32), cold_tune_users=tune.astype(np.int32), cold_test_users=test.astype(np.int32),
        targets=targets, user_ids=np.array([""] + [f"u{u}" for u in range(1, n_users + 1)]),
        item_ids=np.array([""] + [f"i{i}" for i in range(1, n_items + 1)]), meta={"synthetic": "chain", "seed": seed},
    )


def check_contract(data: SequenceDataset) -> None:
    """Raise AssertionError naming the first broken rule of the SequenceDataset contract (see sequences.py)."""
    n_u, n_i = data.n_users, data.n_items
    off = data.offsets
    assert off.shape == (n_u + 2,) and off[0] == 0 and off[1] == 0, "offsets: [n_users+2], user 0 owns no events"
    assert np.all(np.diff(off) >= 0) and off[-1] == data.items.size, "offsets must be non-decreasing, end at n_events"
    assert data.items.size == data.behaviors.size == data.timestamps.size, "event arrays differ in length"
    assert data.items.min(initial=1) >= 1 and data.items.max(initial=1) <= n_i, "item ids must lie in 1..n_items"
    assert data.behaviors.min(initial=1) >= 1 and data.behaviors.max(initial=1) <= data.n_behaviors, \
        "behavior codes must lie in 1..n_behaviors"
    assert data.train_end.shape == (n_u + 1,), "train_end: [n_users+1]"
    assert np.all(data.train_end >= off[:-1]) and np.all(data.train_end <= off[1:]), \
        "train_end[u] must lie in offsets[u]..offsets[u+1]"
    user_of_event = np.repeat(np.arange(n_u + 1), np.diff(off))
    seen = np.unique(user_of_event.astype(np.int64) * (n_i + 1) + data.items)  # every (user, item) pair
    for name, ts in data.targets.items():
        n = len(ts)
        assert ts.positions.shape == ts.items.shape == ts.zero_shot.shape == (n,), f"{name}: array shapes differ"
        assert ts.negatives.ndim == 2 and ts.negatives.shape[0] == n, f"{name}: negatives must be [n, m]"
        assert np.all(user_of_event[ts.positions] == ts.users), f"{name}: a position lies outside its user's events"
        assert np.all(data.items[ts.positions] == ts.items), f"{name}: items != events_item[position]"
        assert np.all(np.isin(data.behaviors[ts.positions], data.target_behaviors)), \
            f"{name}: a target event is not of a target behavior"
        if name != "cold_test":
            assert not ts.zero_shot.any(), f"{name}: only cold_test may hold zero-shot instances"
        negs = np.sort(ts.negatives, axis=1)
        assert negs.size == 0 or (negs.min() >= 1 and negs.max() <= n_i), f"{name}: negative ids out of range"
        assert np.all(negs[:, 1:] != negs[:, :-1]), f"{name}: negatives repeat within an instance"
        assert not np.any(ts.negatives == ts.items[:, None]), f"{name}: a negative is the target"
        if data.meta.get("history_items", "excluded") == "excluded":
            # Negatives avoid every item of the user (any behavior, whole history).
            keys = ts.users.astype(np.int64)[:, None] * (n_i + 1) + ts.negatives
            hit = np.searchsorted(seen, keys).clip(max=seen.size - 1)
            assert not np.any(seen[hit] == keys), f"{name}: a negative is an item the user interacted with"
    for name, users in (("valid", data.warm_users), ("test", data.warm_users), ("cold_valid", data.cold_tune_users)):
        if name in data.targets:
            assert np.array_equal(np.sort(data.targets[name].users), np.sort(users)), f"{name}: wrong user set"
    if "valid" in data.targets:
        v = data.targets["valid"]
        assert np.all(data.train_end[v.users] == v.positions), "warm train_end must equal the valid position"
