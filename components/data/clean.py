"""Cleaning: the dataset's time window, exact duplicates, k-core filtering, contiguous ids, stable time order.

Input is a canonical interactions table (see ``schema.py``).  Output is a compact table with contiguous ids
(users 1..n_users, items 1..n_items; 0 stays free for padding), the behavior column unchanged (dictionary, so
names travel with it) and rows sorted by (user, timestamp) *stably*: events with equal timestamps keep file
order, which is the only order IJCAI-15's day-level stamps have.  Each rule logs the rows before and after it
and writes them into the report, so a user can see where their data went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER, check_canonical
from components.data.timewindow import window_bounds

logger = logging.getLogger(__name__)


@dataclass
class CleanConfig:
    drop_duplicates: bool = True
    #: Inclusive bounds as ISO-8601 datetimes (with offset); rows outside are dropped.  None keeps every row.
    time_window: tuple[str, str] | None = None
    #: k-core: users and items with fewer events than this are dropped, repeatedly until none is left.
    min_user_events: int = 0
    min_item_events: int = 0
    max_kcore_rounds: int = 100


@dataclass
class CleanResult:
    interactions: pa.Table  # user int32, item int32, behavior dictionary<int8,string>, timestamp int64; sorted
    user_ids: pa.Array  # original id (as string) of contiguous user u at index u - 1
    item_ids: pa.Array  # original id (as string) of contiguous item i at index i - 1
    report: dict = field(default_factory=dict)

    @property
    def behavior_names(self) -> list[str]:
        return _behavior_names(self.interactions)


def _behavior_names(table: pa.Table) -> list[str]:
    col = table.column(BEHAVIOR)
    if col.num_chunks == 0:
        return []
    return col.chunk(0).dictionary.to_pylist()


def clean_interactions(table: pa.Table, cfg: CleanConfig) -> CleanResult:
    check_canonical(table, where="clean input")
    steps: list[dict] = []

    def record(rule: str, before: int, after: int) -> None:
        steps.append({"rule": rule, "rows_before": before, "rows_after": after, "dropped": before - after})
        logger.info("clean %-16s %12s -> %12s rows (%s dropped)", rule, f"{before:,}", f"{after:,}",
                    f"{before - after:,}")

    behavior = table.column(BEHAVIOR).combine_chunks()
    names = behavior.dictionary.to_pylist()
    # Work on integer codes: users and items as ranks of their sorted distinct values, behavior as its index.
    user_codes, user_values = _encode(table.column(USER))
    item_codes, item_values = _encode(table.column(ITEM))
    beh = behavior.indices.to_numpy(zero_copy_only=False).astype(np.int8)
    ts = table.column(TIMESTAMP).to_numpy().astype(np.int64, copy=False)
    n0 = len(ts)

    # 1. time window (first: it is cheap and shrinks everything after it)
    idx = np.arange(n0)
    if cfg.time_window is not None:
        lo, hi = window_bounds(cfg.time_window)
        idx = idx[(ts >= lo) & (ts <= hi)]
        record("time_window", n0, idx.size)
    if idx.size == 0:
        raise ValueError(f"clean: no interactions left after cleaning {n0:,} rows; rules applied: {steps}")

    # 2. one stable sort by (user, time): equal timestamps keep file order (IJCAI's day stamps need it)
    idx = idx[_stable_user_time_order(user_codes[idx], ts[idx])]

    # 3. exact duplicates: identical rows share (user, time), so only runs of equal (user, time) can hold them
    if cfg.drop_duplicates:
        before = idx.size
        idx = idx[~_duplicates_in_runs(user_codes[idx], ts[idx], item_codes[idx], beh[idx])]
        record("duplicates", before, idx.size)

    # 4. k-core, repeated until stable
    if cfg.min_user_events > 1 or cfg.min_item_events > 1:
        before = idx.size
        keep = _kcore(user_codes[idx], item_codes[idx], cfg.min_user_events, cfg.min_item_events,
                      cfg.max_kcore_rounds)
        idx = idx[keep]
        record(f"kcore(u>={cfg.min_user_events},i>={cfg.min_item_events})", before, idx.size)

    if idx.size == 0:
        raise ValueError(f"clean: no interactions left after cleaning {n0:,} rows; rules applied: {steps}")
    u_new, user_ids = _compact(user_codes[idx], user_values)
    i_new, item_ids = _compact(item_codes[idx], item_values)
    beh_kept = beh[idx]
    out = pa.table({
        USER: pa.array(u_new, pa.int32()),
        ITEM: pa.array(i_new, pa.int32()),
        BEHAVIOR: pa.DictionaryArray.from_arrays(pa.array(beh_kept, pa.int8()), pa.array(names, pa.string())),
        TIMESTAMP: pa.array(ts[idx], pa.int64()),
    })
    counts = np.bincount(beh_kept, minlength=len(names))
    report = {
        "rows_in": n0, "rows_out": out.num_rows, "steps": steps,
        "n_users": len(user_ids), "n_items": len(item_ids),
        "behavior_counts": {n: int(c) for n, c in zip(names, counts)},
    }
    logger.info("clean: %s users, %s items, %s events", f"{len(user_ids):,}", f"{len(item_ids):,}",
                f"{out.num_rows:,}")
    return CleanResult(out, user_ids, item_ids, report)


def _stable_user_time_order(users: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Permutation sorting by (user, timestamp), ties in input order.  Packs both into one int64 key when they
    fit (one stable argsort is ~10x faster than lexsort on 10M rows), else falls back to lexsort."""
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + 1
    if (int(users.max()) + 1) * span < 2**62:
        return np.argsort(users.astype(np.int64) * span + (ts - t0), kind="stable")
    return np.lexsort((ts, users))


def _duplicates_in_runs(users: np.ndarray, ts: np.ndarray, items: np.ndarray, beh: np.ndarray) -> np.ndarray:
    """Mask of rows (already sorted by user, time) repeating an earlier row exactly; the first copy stays."""
    n = users.size
    same = np.zeros(n, bool)
    same[1:] = (users[1:] == users[:-1]) & (ts[1:] == ts[:-1])
    in_run = same.copy()
    in_run[:-1] |= same[1:]  # first row of each run of equal (user, time)
    cand = np.flatnonzero(in_run)
    dup = np.zeros(n, bool)
    if cand.size:
        # Within the candidates, order by (user, time, item, behavior, position): copies become adjacent and the
        # earliest copy comes first.
        o = np.lexsort((cand, beh[cand], items[cand], ts[cand], users[cand]))
        c = cand[o]
        rep = np.zeros(c.size, bool)
        rep[1:] = ((users[c[1:]] == users[c[:-1]]) & (ts[c[1:]] == ts[c[:-1]])
                   & (items[c[1:]] == items[c[:-1]]) & (beh[c[1:]] == beh[c[:-1]]))
        dup[c[rep]] = True
    return dup


def _encode(col: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dense codes 0..k-1 for a column of ids, with the distinct values sorted (so ids do not depend on file
    order) and rendered as strings (the id maps' common type)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    values = enc.dictionary
    codes = enc.indices.to_numpy(zero_copy_only=False)  # int32: half the memory of int64 on 100M rows
    order = pc.sort_indices(values).to_numpy()
    rank = np.empty(len(order), dtype=np.int32 if len(order) < 2**31 else np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], values.take(pa.array(order)).cast(pa.string())


def _compact(codes: np.ndarray, values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Renumber surviving codes to 1..k (keeping their sorted order) and return the kept original ids."""
    present = np.zeros(len(values), dtype=bool)
    present[codes] = True
    new_id = np.cumsum(present)  # 1-based for present codes
    return new_id[codes].astype(np.int32), values.filter(pa.array(present))


def _kcore(users: np.ndarray, items: np.ndarray, k_user: int, k_item: int, max_rounds: int) -> np.ndarray:
    keep = np.ones(users.size, bool)
    n_u, n_i = int(users.max()) + 1, int(items.max()) + 1
    for _ in range(max_rounds):
        uc = np.bincount(users[keep], minlength=n_u)
        ic = np.bincount(items[keep], minlength=n_i)
        bad = keep & ((uc[users] < k_user) | (ic[items] < k_item))
        if not bad.any():
            return keep
        keep &= ~bad
    logger.warning("k-core did not converge in %d rounds", max_rounds)
    return keep
