"""Vectorised (numpy) batch builders over a ``SequenceDataset``: no Python loop over users inside a batch.

Both builders cut a window of each user's events out of the CSR arrays with one gather: for a window that ends
(exclusively) at event ``end`` and may not start before ``start``, column j of a width-W window reads event
``end - W + j`` and is padding where that index falls before ``start``.  Windows are LEFT-padded so the most
recent event is always the last column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from components.data.sequences import SequenceDataset, TargetSet, gather_windows
from components.models.popularity import training_event_mask


def training_users(data: SequenceDataset, users: np.ndarray, zero_shot: bool = False) -> np.ndarray:
    """The users whose training prefix holds at least one (input, next event) pair; with ``zero_shot`` also those
    whose first training event is of a target behavior (a zero-shot example, possibly their only event)."""
    users = np.asarray(users, dtype=np.int64)
    length = data.train_end[users] - data.offsets[users]
    keep = length >= 2
    if zero_shot:
        has = length >= 1
        first_is_target = np.zeros(users.shape, dtype=bool)
        first_is_target[has] = np.isin(data.behaviors[data.offsets[users[has]]], np.asarray(data.target_behaviors))
        keep |= has & first_is_target
    return users[keep]


def label_counts(data: SequenceDataset, users: np.ndarray, train_on: Literal["target", "all"] = "target") -> np.ndarray:
    """[n_items + 1] how often each item is a training label of ``users``: every event of their training prefixes
    but the first (of a target behavior, with ``train_on="target"``); the held-out targets are not counted."""
    users = np.asarray(users, dtype=np.int64)
    labels = training_event_mask(data, users)
    labels[data.offsets[users]] = False  # a prefix's first event is never a label (outside any prefix if empty)
    if train_on == "target":
        labels &= np.isin(data.behaviors, np.asarray(data.target_behaviors))
    return np.bincount(data.items[labels], minlength=data.n_items + 1)


def training_batches(
    data: SequenceDataset,
    users: np.ndarray,
    max_len: int,
    batch_size: int,
    rng: np.random.Generator,
    train_on: Literal["target", "all"] = "target",
    with_users: bool = False,
    zero_shot: bool = False,
    length_buckets: bool = False,
) -> Iterator[tuple[Tensor, ...]]:
    """Shuffled next-item batches over the training prefixes of ``users``.

    Each user contributes one row: the last max_len+1 events of offsets[u]:train_end[u]; inputs are all but the
    last event, labels the event after each input.  Yields LongTensors (items [B, L], behaviors [B, L],
    labels [B, L]) and a bool label_mask [B, L], L = max_len.  label_mask is true where both the input and the
    next event are real and (train_on="target") the next event's behavior is a target behavior: inputs always
    carry every behavior, but only target events are predicted, matching what evaluation asks for.
    Users with fewer than two training events are skipped.  ``with_users`` appends the batch's user ids [B]
    (models that read user profiles need them).

    ``zero_shot`` (prompt tuning for cold-start users) also marks each user's *zero-shot example*: its first
    training event predicted from an empty history.  In a window ``[pad ... pad | e_1 ... e_n]`` the column just
    left of ``e_1`` holds padding as input and ``e_1`` as label; label_mask is set there when the window reaches
    back to the first event (a prefix of at most ``max_len`` events) and that event is of a target behavior (what
    a zero-shot test instance asks for).  Being an ordinary labelled position, its sampled negative is drawn and
    checked like every other; and a user whose single training event is such an example is kept.

    ``length_buckets`` groups users of similar history length into the same batch and cuts each batch's leading
    columns that hold padding only and carry no label, so a batch is as wide as its longest row needs (L <= max_len
    varies by batch).  The users are shuffled as without it, then each pool of ``BUCKET_POOL`` batches' users is
    sorted by the width its rows need (stable: ties stay in shuffled order) and cut into batches, and the order of
    all batches is shuffled; every draw comes from ``rng``, so the epoch is reproducible from the seed, and there
    are as many batches of the same sizes as without it.  Positions count from each row's first real event
    (``positions_from_first_event``), so the cut columns change no output (tests/models/test_trim.py).
    """
    if train_on not in ("target", "all"):
        raise ValueError(f"training_batches: train_on must be 'target' or 'all', got {train_on!r}")
    if max_len < 1 or batch_size < 1:
        raise ValueError(f"training_batches: max_len ({max_len}) and batch_size ({batch_size}) must be >= 1")
    users = training_users(data, users, zero_shot)
    order = users[rng.permutation(len(users))]
    targets = np.asarray(data.target_behaviors, dtype=np.int64)
    chunks = [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]
    if length_buckets:
        width = np.minimum(data.train_end[order] - data.offsets[order], max_len + 1)  # events a row's window holds
        chunks = _length_buckets(order, width, batch_size, rng)
    for u in chunks:
        win_items, win_beh = gather_windows(data, data.offsets[u], data.train_end[u], max_len + 1)  # [B, L+1]
        items, behaviors = win_items[:, :-1], win_beh[:, :-1]
        labels, label_beh = win_items[:, 1:], win_beh[:, 1:]
        mask = (items != 0) & (labels != 0)
        if train_on == "target":
            mask &= np.isin(label_beh, targets)
        if zero_shot:  # the column left of the first training event: padding in, first event out
            length = (data.train_end[u] - data.offsets[u]).astype(np.int64)
            reach = (length >= 1) & (length <= max_len)
            col = np.where(reach, max_len - length, 0)
            rows = np.arange(len(u))
            zero = reach & np.isin(label_beh[rows, col], targets)
            mask[rows[zero], col[zero]] = True
        if length_buckets:  # cut the leading columns that are padding in every row and labelled in none
            first = int(np.argmax(((items != 0) | mask).any(axis=0)))
            items, behaviors, labels, mask = items[:, first:], behaviors[:, first:], labels[:, first:], mask[:, first:]
        batch = (torch.from_numpy(np.ascontiguousarray(items)), torch.from_numpy(np.ascontiguousarray(behaviors)),
                 torch.from_numpy(np.ascontiguousarray(labels)), torch.from_numpy(mask))
        yield (*batch, torch.from_numpy(u.astype(np.int64))) if with_users else batch


#: Batches per pool that ``training_batches(length_buckets=True)`` sorts by length: users are grouped with the
#: ``BUCKET_POOL * batch_size`` around them in the epoch's shuffled order, so a batch's members still change from
#: epoch to epoch while widths inside a batch stay close.
BUCKET_POOL = 16


def _length_buckets(order: np.ndarray, length: np.ndarray, batch_size: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Users in ``order`` (already shuffled), grouped into batches of similar ``length`` (see training_batches);
    the batch sizes are those of cutting ``order`` in order, only the batches' order is shuffled."""
    pool = BUCKET_POOL * batch_size
    chunks = []
    for lo in range(0, len(order), pool):
        part = order[lo:lo + pool]
        part = part[np.argsort(length[lo:lo + pool], kind="stable")]
        chunks += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


@dataclass
class EvalBatch:
    index: np.ndarray  # int64 [B] rows of the target set these instances are
    items: Tensor  # long [B, max_len] left-padded history (empty for zero-shot instances)
    behaviors: Tensor  # long [B, max_len]
    targets: Tensor  # long [B]
    negatives: Tensor  # long [B, m]
    history_rows: Tensor  # long [H] row in the batch of each history event (all of it, not only the window)
    history_items: Tensor  # long [H] item of each history event; with history_rows: the exclude-mask source
    users: np.ndarray | None = None  # int64 [B] user of each instance (models that read profiles need it)

    def exclude_mask(self, n_items: int, device: torch.device | str = "cpu") -> Tensor:
        """bool [B, n_items + 1]: True at items in each instance's history (the target is NOT cleared here)."""
        m = torch.zeros(len(self.targets), n_items + 1, dtype=torch.bool, device=device)
        m[self.history_rows.to(device), self.history_items.to(device)] = True
        return m


def eval_batches(
    data: SequenceDataset,
    target_set: str | TargetSet,
    max_len: int | None,
    batch_size: int,
    subset: np.ndarray | None = None,
) -> Iterator[EvalBatch]:
    """Batches of evaluation instances in target-set order (optionally only rows where ``subset`` is true).

    History = the user's events (all behaviors) before the target's position; zero-shot instances have none.
    The model sees the last ``max_len`` of them (None: all of them, the batch as wide as its longest history);
    the exclude source covers the whole history, because an item the user already acted on is excluded from full
    ranking however long ago that was.
    """
    ts = data.targets[target_set] if isinstance(target_set, str) else target_set
    rows = np.arange(len(ts), dtype=np.int64)
    if subset is not None:
        subset = np.asarray(subset, dtype=bool)
        if subset.shape != (len(ts),):
            raise ValueError(f"eval_batches: subset has shape {subset.shape}, target set has {len(ts)} instances")
        rows = rows[subset]
    hist_start_all = ts.history_start(data.offsets)
    for lo in range(0, len(rows), batch_size):
        r = rows[lo:lo + batch_size]
        start = hist_start_all[r]
        end = ts.positions[r].astype(np.int64)
        lens = end - start
        width = max_len if max_len is not None else max(1, int(lens.max(initial=0)))
        items, behaviors = gather_windows(data, start, end, width)
        # Flat indices of every history event of the batch: start[i] + 0..lens[i]-1 for each row i.
        h_rows = np.repeat(np.arange(len(r), dtype=np.int64), lens)
        first = np.repeat(start - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        h_idx = first + np.arange(int(lens.sum()), dtype=np.int64)
        yield EvalBatch(
            index=r,
            items=torch.from_numpy(items),
            behaviors=torch.from_numpy(behaviors),
            targets=torch.from_numpy(ts.items[r].astype(np.int64)),
            negatives=torch.from_numpy(np.ascontiguousarray(ts.negatives[r].astype(np.int64))),
            history_rows=torch.from_numpy(h_rows),
            history_items=torch.from_numpy(data.items[h_idx].astype(np.int64)),
            users=ts.users[r].astype(np.int64),
        )
