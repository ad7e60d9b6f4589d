"""Cleaning: the dataset's time window, exact duplicates, k-core filtering, contiguous ids, stable time order.

Input is a canonical interactions table (see ``schema.py``).  Output is a compact table with contiguous ids
(users 1..n_users, items 1..n_items; 0 stays free for padding), the behavior column unchanged (dictionary, so
names travel with it) and rows sorted by (user, timestamp) *stably*: events with equal timestamps keep the
reader's order, which is file order (the only order IJCAI-15's day-level stamps have) unless a generic mapping
names a ``tie_break`` column (then ties are ordered by it first; ``readers/generic.py``).  Each rule logs the rows before and after it
and writes them into the report, so a user can see where their data went.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
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


@dataclass
class VocabularyCodes:
    """A cleaned table's events in another vocabulary (a model's): ``items`` [n_events] its item ids 1..n (0: an
    item it does not know), ``behaviors`` [n_events] its behavior codes 1..k (0: unknown), both int64;
    ``unknown_items`` how many of the data's distinct items it does not know, ``unknown_behaviors`` the data's
    behavior names it does not know."""

    items: np.ndarray
    behaviors: np.ndarray
    n_items: int
    unknown_items: int
    unknown_behaviors: list[str]


def vocabulary_codes(clean: CleanResult, item_ids: Sequence[str], behavior_names: Sequence[str]) -> VocabularyCodes:
    """Each event of ``clean`` in the vocabulary ``item_ids`` (original item id of each contiguous id, index 0 =
    padding) and ``behavior_names`` (in code order): what the daily refresh and batch recommendations map fresh
    data through."""
    t = clean.interactions
    index = {str(v): i for i, v in enumerate(item_ids) if i > 0}
    data_items = [str(x) for x in clean.item_ids.to_pylist()]
    item_lookup = np.zeros(len(data_items) + 1, np.int64)
    item_lookup[1:] = [index.get(x, 0) for x in data_items]
    col = t.column(BEHAVIOR).combine_chunks()
    names = col.dictionary.to_pylist()
    code = {n: i + 1 for i, n in enumerate(behavior_names)}
    beh_lookup = np.array([code.get(n, 0) for n in names] or [0], np.int64)
    return VocabularyCodes(items=item_lookup[t.column(ITEM).to_numpy().astype(np.int64)],
                           behaviors=beh_lookup[col.indices.to_numpy(zero_copy_only=False).astype(np.int64)],
                           n_items=len(data_items), unknown_items=int((item_lookup[1:] == 0).sum()),
                           unknown_behaviors=sorted(n for n in names if n not in code))


def _behavior_names(table: pa.Table) -> list[str]:
    col = table.column(BEHAVIOR)
    if col.num_chunks == 0:
        return []
    return col.chunk(0).dictionary.to_pylist()


def clean_interactions(table: pa.Table, cfg: CleanConfig) -> CleanResult:
    """Clean ``table`` (see the module docstring).

    Memory: the columns become compact numpy arrays one at a time (int32 id codes, int8 behavior codes, int64
    seconds; the time window applied as they are copied), each Arrow column let go once copied; the sort and the
    filters then work in place or on one array at a time.  A caller that hands over its only reference to the
    table (``clean_interactions(read_dataset(...).interactions, cfg)``) has the raw table freed while cleaning;
    one that keeps it pays the compact arrays (~17 B/row) and the sort's working set (~13 B/row) on top."""
    check_canonical(table, where="clean input")
    steps: list[dict] = []

    def record(rule: str, before: int, after: int) -> None:
        steps.append({"rule": rule, "rows_before": before, "rows_after": after, "dropped": before - after})
        logger.info("clean %-16s %12s -> %12s rows (%s dropped)", rule, f"{before:,}", f"{after:,}",
                    f"{before - after:,}")

    n0 = table.num_rows
    cols = [table.column(USER), table.column(ITEM), table.column(BEHAVIOR), table.column(TIMESTAMP)]
    del table  # from here only these four columns are referenced (by this function)
    behavior = _pop(cols, 2).combine_chunks()
    names = behavior.dictionary.to_pylist()

    # 1. time window (first: it is cheap and shrinks everything after it), as one keep mask over the rows
    ts_chunks = list(_pop(cols, 3).chunks)
    keep: np.ndarray | None = None
    if cfg.time_window is not None:
        lo, hi = window_bounds(cfg.time_window)
        keep = np.empty(n0, bool)
        pos = 0
        for c in ts_chunks:
            v = _np(c)
            np.logical_and(v >= lo, v <= hi, out=keep[pos:pos + v.size])
            pos += v.size
        n = int(np.count_nonzero(keep))
        record("time_window", n0, n)
        if n == n0:
            keep = None  # nothing dropped: no masking below
    else:
        n = n0
    if n == 0:
        raise ValueError(f"clean: no interactions left after cleaning {n0:,} rows; rules applied: {steps}")
    # Integer codes: users and items as ranks of their sorted distinct values, behavior as its index.
    ts = _gather(ts_chunks, keep, np.int64, n)
    _release()
    user_codes, user_values = _encode(_pop(cols, 0), keep, n)
    _release()
    item_codes, item_values = _encode(_pop(cols, 1), keep, n)
    _release()
    beh = behavior.indices.to_numpy(zero_copy_only=False).astype(np.int8)
    del behavior
    if keep is not None:
        beh = beh[keep]
    del keep

    # 2. one stable sort by (user, time): equal timestamps keep file order (IJCAI's day stamps need it).  The
    # arrays travel in a list the callee empties, so no reference here keeps an input alive beside its output.
    rows = [user_codes, ts, item_codes, beh]
    del user_codes, ts, item_codes, beh
    _sort_by_user_time(rows)

    # 3. exact duplicates: identical rows share (user, time), so only runs of equal (user, time) can hold them
    if cfg.drop_duplicates:
        before = rows[1].size
        dup = _duplicates_in_runs(*rows)
        if dup.any():
            _filter(rows, ~dup)
        del dup
        record("duplicates", before, rows[1].size)

    # 4. k-core, repeated until stable
    if cfg.min_user_events > 1 or cfg.min_item_events > 1:
        before = rows[1].size
        kept = _kcore(rows[0], rows[2], cfg.min_user_events, cfg.min_item_events, cfg.max_kcore_rounds)
        if not kept.all():
            _filter(rows, kept)
        del kept
        record(f"kcore(u>={cfg.min_user_events},i>={cfg.min_item_events})", before, rows[1].size)

    if rows[1].size == 0:
        raise ValueError(f"clean: no interactions left after cleaning {n0:,} rows; rules applied: {steps}")
    u_new, user_ids = _compact(_pop(rows, 0), user_values)
    i_new, item_ids = _compact(_pop(rows, 2), item_values)
    ts, beh = _pop(rows, 1), _pop(rows, 3)
    out = pa.table({
        USER: pa.array(u_new, pa.int32()),
        ITEM: pa.array(i_new, pa.int32()),
        BEHAVIOR: pa.DictionaryArray.from_arrays(pa.array(beh, pa.int8()), pa.array(names, pa.string())),
        TIMESTAMP: pa.array(ts, pa.int64()),
    })
    counts = np.bincount(beh, minlength=len(names))
    report = {
        "rows_in": n0, "rows_out": out.num_rows, "steps": steps,
        "n_users": len(user_ids), "n_items": len(item_ids),
        "behavior_counts": {n: int(c) for n, c in zip(names, counts)},
    }
    logger.info("clean: %s users, %s items, %s events", f"{len(user_ids):,}", f"{len(item_ids):,}",
                f"{out.num_rows:,}")
    return CleanResult(out, user_ids, item_ids, report)


# ----------------------------------------------------------------------------------------------- columns -> arrays

_BLOCK = 1 << 20  # rows per block of the blockwise loops (bounds their int64 temporaries to 8 MiB)
_RELEASE_CHUNKS = 16  # Arrow chunks copied between two returns of their memory to the OS


def _release() -> None:
    """Hand the Arrow memory just freed back to the OS now (the allocator would keep it a while, and numpy, which
    allocates the arrays that replace it, cannot reuse it)."""
    pa.default_memory_pool().release_unused()


def _pop(cols: list, i: int):
    """``cols[i]``, leaving None in its place (so the caller holds the only reference)."""
    col, cols[i] = cols[i], None
    return col


def _np(chunk: pa.Array) -> np.ndarray:
    return chunk.to_numpy(zero_copy_only=False)


def _gather(chunks: list[pa.Array], keep: np.ndarray | None, dtype: type, n: int) -> np.ndarray:
    """The kept rows of the chunks as one new array; each chunk is let go once copied."""
    out = np.empty(n, dtype)
    for dst, v in _kept_chunks(chunks, keep):
        out[dst:dst + v.size] = v
    return out


def _kept_chunks(chunks: list[pa.Array], keep: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
    """(offset in the output, kept values) of each chunk in turn; each chunk is let go once read (and Arrow's
    memory handed back every ``_RELEASE_CHUNKS`` chunks)."""
    src = dst = 0
    for j in range(len(chunks)):
        v = _np(chunks[j])
        m = v.size
        if keep is not None:
            v = v[keep[src:src + m]]
        chunks[j] = None
        yield dst, v
        src, dst = src + m, dst + v.size
        v = None
        if j % _RELEASE_CHUNKS == _RELEASE_CHUNKS - 1:
            _release()


def _same_dictionary(a: pa.Array, b: pa.Array) -> bool:
    if len(a) == len(b) and [x.address if x else 0 for x in a.buffers()] == [x.address if x else 0
                                                                              for x in b.buffers()]:
        return True
    return a.equals(b)


def _encode(col: pa.ChunkedArray, keep: np.ndarray | None, n: int) -> tuple[np.ndarray, pa.Array]:
    """Dense codes 0..k-1 (int32 while k < 2**31) of the kept rows of a column of ids, with the distinct values
    sorted (so ids do not depend on file order) and rendered as strings (the id maps' common type).  The codes
    rank every distinct value of the column, kept or not (``_compact`` drops the unused ones)."""
    dense = _dense_int_encode(col, keep, n)
    if dense is not None:
        return dense
    enc = pc.dictionary_encode(col)
    del col
    chunks = list(enc.chunks)
    if any(not _same_dictionary(c.dictionary, chunks[0].dictionary) for c in chunks[1:]):
        chunks = [enc.combine_chunks()]  # chunks with dictionaries of their own: unify them
    del enc
    _release()  # the raw column, before the codes' array is allocated
    values = chunks[0].dictionary
    order = pc.sort_indices(values).to_numpy()
    rank = np.empty(len(order), dtype=np.int32 if len(order) < 2**31 else np.int64)
    rank[order] = np.arange(len(order), dtype=rank.dtype)
    out = np.empty(n, rank.dtype)
    src = dst = 0
    for j in range(len(chunks)):
        codes = chunks[j].indices.to_numpy(zero_copy_only=False)
        m = codes.size
        if keep is not None:
            codes = codes[keep[src:src + m]]
        np.take(rank, codes, out=out[dst:dst + codes.size])
        src, dst = src + m, dst + codes.size
        chunks[j] = codes = None
        if j % _RELEASE_CHUNKS == _RELEASE_CHUNKS - 1:
            _release()
    return out, values.take(pa.array(order)).cast(pa.string())


def _dense_int_encode(col: pa.ChunkedArray, keep: np.ndarray | None, n: int
                      ) -> tuple[np.ndarray, pa.Array] | None:
    """What :func:`_encode` returns, for integer ids without nulls spanning a range not much wider than the rows
    (Taobao's: 1M users and 5M items for 100M rows): one table over the range (present -> rank) instead of a hash
    table, several times faster and with no index array the size of the column.  None when it does not apply."""
    if not pa.types.is_integer(col.type) or col.null_count or len(col) == 0:
        return None
    lo_hi = pc.min_max(col)
    lo, hi = int(lo_hi["min"].as_py()), int(lo_hi["max"].as_py())
    width = hi - lo + 1
    if width > 2 * len(col) + (1 << 20) or width >= 2**31 or hi >= 2**63:
        return None
    present = np.zeros(width, bool)
    chunks = list(col.chunks)
    del col
    for c in chunks:
        present[_np(c) - lo] = True
    rank = np.cumsum(present, dtype=np.int32)
    rank -= 1  # rank[v - lo]: code of value v, 0-based in sorted order
    out = np.empty(n, np.int32)
    for dst, v in _kept_chunks(chunks, keep):
        np.take(rank, v - lo, out=out[dst:dst + v.size])
    values = pa.array(np.flatnonzero(present) + lo, pa.int64())
    return out, values.cast(pa.string())


def _filter(arrays: list[np.ndarray], mask: np.ndarray) -> None:
    """Keep the rows of ``mask`` in each array of the list, one array at a time (each old one freed at once)."""
    for k in range(len(arrays)):
        arrays[k] = arrays[k][mask]


def _sort_by_user_time(rows: list[np.ndarray]) -> None:
    """Sort the arrays of ``rows`` = [users, timestamps (int64), items, behaviors] by (user, timestamp), ties in
    input order (a stable sort), replacing them in the list; the inputs are consumed (the timestamps array
    becomes the sort key and then the sorted timestamps), so the caller must hold no other reference to them.

    User and time are packed into one int64 key ``user * span + (ts - t0)`` and the row's position into the low
    bits below it, so a plain in-place sort of unique values (several times faster than a stable argsort) gives
    the stable order; when key and position do not fit in 63 bits together, the rows are first split into groups
    of consecutive users (each sorted on its own, with positions within the group).  Keys too wide for that fall
    back to a stable argsort or a lexsort."""
    users, ts, items, beh = rows
    rows[:] = [None] * 4
    n = ts.size
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + 1
    n_users = int(users.max()) + 1
    if n_users * span >= 2**62:
        order = np.lexsort((ts, users))
        rows[:] = [users[order], ts[order], items[order], beh[order]]
        return
    key = ts
    key -= t0
    for s in range(0, n, _BLOCK):
        key[s:s + _BLOCK] += users[s:s + _BLOCK].astype(np.int64) * span
    users_dtype = users.dtype
    del users, ts
    pos_bits = max(1, (n - 1).bit_length())
    per_group = (1 << (63 - pos_bits)) // span  # users per group whose keys fit beside any position
    if per_group < 1:
        order = np.argsort(key, kind="stable")
        key, items, beh = key[order], items[order], beh[order]
        del order
    elif per_group >= n_users:
        key <<= pos_bits
        for s in range(0, n, _BLOCK):
            key[s:s + _BLOCK] |= np.arange(s, min(s + _BLOCK, n), dtype=np.int64)
        key.sort()
        order = key & ((1 << pos_bits) - 1)
        key >>= pos_bits
        items, beh = items[order], beh[order]
        del order
    else:
        key, items, beh = _sort_in_groups(key, items, beh, per_group * span)
    users = np.empty(n, users_dtype)
    for s in range(0, n, _BLOCK):
        q = key[s:s + _BLOCK] // span
        users[s:s + _BLOCK] = q
        q *= span
        key[s:s + _BLOCK] -= q
    key += t0
    rows[:] = [users, key, items, beh]


def _sort_in_groups(key: np.ndarray, items: np.ndarray, beh: np.ndarray, width: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort (key, items, beh) by key, ties in input order, group by group: group g holds the keys in
    [g * width, (g + 1) * width), so a group's local key and a position within it fit in one int64."""
    n = key.size
    n_groups = int(key.max()) // width + 1
    gid = np.empty(n, np.uint16 if n_groups <= 1 << 16 else np.int32)
    for s in range(0, n, _BLOCK):
        gid[s:s + _BLOCK] = key[s:s + _BLOCK] // width
    sizes = np.bincount(gid, minlength=n_groups)
    # Rows already grouped by user (the Taobao file is): each group is a slice, no scan for its rows.
    contiguous = bool((gid[1:] >= gid[:-1]).all())
    key_out, items_out, beh_out = np.empty_like(key), np.empty_like(items), np.empty_like(beh)
    dst = 0
    for g in np.flatnonzero(sizes):
        m = int(sizes[g])
        sel = slice(dst, dst + m) if contiguous else np.flatnonzero(gid == g)
        pos_bits = max(1, (m - 1).bit_length())
        local = key[sel]  # a copy, or (contiguous) a view: the input keys are consumed either way
        local -= g * width
        local <<= pos_bits
        local |= np.arange(m, dtype=np.int64)
        local.sort()
        src = local & ((1 << pos_bits) - 1)
        if contiguous:
            src += dst
        else:
            src = sel[src]
        local >>= pos_bits
        local += g * width
        key_out[dst:dst + m] = local
        items_out[dst:dst + m] = items[src]
        beh_out[dst:dst + m] = beh[src]
        dst += m
        del sel, local, src
    return key_out, items_out, beh_out


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


def _compact(codes: np.ndarray, values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Renumber surviving codes to 1..k (keeping their sorted order) and return the kept original ids."""
    present = np.zeros(len(values), dtype=bool)
    present[codes] = True
    if present.all():  # every id survived: the new id is the code + 1 (``codes`` is ours to overwrite)
        codes = codes.astype(np.int32, copy=False)
        codes += 1
        return codes, values
    new_id = np.cumsum(present, dtype=np.int32 if len(values) < 2**31 else np.int64)  # 1-based for present codes
    return new_id[codes].astype(np.int32, copy=False), values.filter(pa.array(present))


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
