"""Controlled noise: inject random "mis-click" events into real logs, and find them again after cleaning.

Used to ask what the denoising papers leave open: does a noise eliminator drop injected events more often than
real ones?  Each user gets ``round(rate * n_events)`` extra events of behavior ``behavior`` at times drawn
uniformly inside the user's own first..last timestamp, on items drawn from the whole log in proportion to their
event counts (a mis-click lands on what is shown, and shown items are popular ones; uniform items would be mostly
one-off items that a k-core filter removes before any model sees them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER
from components.data.sequences import SequenceDataset, gather_windows, window_index


def inject_misclicks(table: pa.Table, rate: float, seed: int, behavior: str = "click") -> tuple[pa.Table, set]:
    """Return the table with injected rows appended and the set of their (user, item, timestamp) keys as strings
    and ints (the keys survive id remapping: ``injected_mask`` looks them up after clean and split)."""
    if not 0 < rate < 1:
        raise ValueError(f"inject_misclicks: rate={rate} must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    users = np.asarray(table.column(USER).to_numpy(zero_copy_only=False))
    ts = table.column(TIMESTAMP).to_numpy()
    all_items = np.asarray(table.column(ITEM).to_numpy(zero_copy_only=False))
    order = np.argsort(users, kind="stable")
    uniq, start, counts = np.unique(users[order], return_index=True, return_counts=True)
    n_new = np.rint(counts * rate).astype(np.int64)
    owner = np.repeat(np.arange(uniq.size), n_new)
    lo = np.minimum.reduceat(ts[order], start)
    hi = np.maximum.reduceat(ts[order], start)
    new_ts = lo[owner] + (rng.random(owner.size) * (hi[owner] - lo[owner] + 1)).astype(np.int64)
    new_items = all_items[rng.integers(0, all_items.size, owner.size)]  # popularity-proportional
    new_users = uniq[owner]
    names = table.column(BEHAVIOR).combine_chunks().dictionary
    code = names.to_pylist().index(behavior)
    extra = {
        USER: pa.array(new_users, table.schema.field(USER).type),
        ITEM: pa.array(new_items, table.schema.field(ITEM).type),
        BEHAVIOR: pa.DictionaryArray.from_arrays(pa.array(np.full(owner.size, code, np.int8)), names),
        TIMESTAMP: pa.array(new_ts, table.schema.field(TIMESTAMP).type),
    }
    for name in table.column_names:
        if name not in extra:  # optional columns (category, seller...) are unknown for injected rows
            extra[name] = pa.nulls(owner.size, table.schema.field(name).type)
    noisy = pa.concat_tables([table.combine_chunks(), pa.table(extra).select(table.column_names).cast(table.schema)])
    keys = {(str(u), str(i), int(t)) for u, i, t in zip(new_users, new_items, new_ts)}
    return noisy, keys


def injected_mask(data: SequenceDataset, keys: set) -> np.ndarray:
    """bool [n_events] over ``data.items``: True where the event is one of the injected ones."""
    users = np.repeat(np.arange(len(data.offsets) - 1), np.diff(data.offsets))
    return np.fromiter(((data.user_ids[u], data.item_ids[i], int(t)) in keys
                        for u, i, t in zip(users, data.items, data.timestamps)), bool, count=len(data.items))


def drop_rates(model, data: SequenceDataset, injected: np.ndarray, users: np.ndarray | None = None,
               batch_size: int = 256) -> dict:
    """Share of injected and of original events that ``model.keep_decisions`` drops (deterministic, as at
    inference) and that training-time sampling drops in expectation (``model.drop_probabilities``), over the
    training prefixes of ``users`` (default: warm users), each read as the model's window of its latest events."""
    import torch

    users = data.warm_users if users is None else users
    window = int(model.max_len)
    dropped = {True: 0, False: 0}
    expected = {True: 0.0, False: 0.0}
    total = {True: 0, False: 0}
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for lo in range(0, len(users), batch_size):
            chunk = users[lo:lo + batch_size]
            start, end = data.offsets[chunk], data.train_end[chunk]
            items, behs = gather_windows(data, start, end, window)
            idx, valid = window_index(start, end, window)
            flags = valid & np.asarray(injected, bool)[idx]
            it, bt = torch.as_tensor(items, device=device), torch.as_tensor(behs, device=device)
            keep = model.keep_decisions(it, bt).cpu().numpy()
            prob = model.drop_probabilities(it, bt).cpu().numpy()
            real = items != 0
            for kind in (True, False):
                sel = real & (flags == kind)
                total[kind] += int(sel.sum())
                dropped[kind] += int((keep[sel] == 0).sum())
                expected[kind] += float(prob[sel].sum())
    return {"injected_events": total[True], "original_events": total[False],
            "drop_rate_injected": dropped[True] / max(total[True], 1),
            "drop_rate_original": dropped[False] / max(total[False], 1),
            "expected_drop_injected": expected[True] / max(total[True], 1),
            "expected_drop_original": expected[False] / max(total[False], 1)}
