"""The split, time-ordered multi-behavior sequences every model trains and is evaluated on.

Conventions (as in SASRec.pytorch and RecBole): ids are contiguous, 0 is padding; item ids run 1..n_items,
user ids 1..n_users, behavior codes 1..n_behaviors.  Each user's events are stored time-ordered in one CSR
block ``events[offsets[u]:offsets[u+1]]``.  An evaluation instance is (user, position, target item, negatives):
its history is every event of that user *before* ``position`` (all behaviors), its target is the item of the
event at ``position`` (always an event of the target behavior).  Negatives are drawn once, with the config's
seed, under the split's ``history_items`` setting (``meta["history_items"]``: from every item but the target, or
from items the user never touched; see ``components.data.split``), and stored here so every model is ranked
against the same ones.  ``repeat`` marks instances whose target already occurs in their own history.

Target sets (keys of ``SequenceDataset.targets``):
  ``valid`` / ``test``  warm users, leave-one-out over target-behavior events (second-to-last / last).
  ``cold_valid``        cold tuning users, their last target-behavior event.
  ``cold_test``         cold test users: one few-shot instance (last target event, non-empty history) and one
                        zero-shot instance (first target event, history cut to nothing); ``zero_shot`` tells which.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Values of the split's ``history_items`` setting: history items stay candidates, or are excluded.
HISTORY_ITEMS = ("candidates", "excluded")


def first_occurrence(users: np.ndarray, items: np.ndarray, n_items: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A lookup ``(users, items) -> index of the user's first event on that item`` (a huge value when never) over
    CSR-ordered events (each user's events contiguous and time-ordered, so the first index is the earliest)."""
    unique, first = _first_pairs(np.asarray(users), np.asarray(items), n_items)
    never = np.iinfo(np.int64).max

    def lookup(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        q = np.asarray(u, np.int64) * (n_items + 1) + np.asarray(v, np.int64)
        if unique.size == 0:
            return np.full(q.shape, never, np.int64)
        pos = np.searchsorted(unique, q).clip(max=unique.size - 1)
        return np.where(unique[pos] == q, first[pos], never).astype(np.int64)

    return lookup


#: Rows per slice of :func:`_first_pairs` (positions within a slice take 20 bits of the packed sort key).
_SLICE_ROWS = 1 << 20


def _first_pairs(users: np.ndarray, items: np.ndarray, n_items: int, slice_rows: int = _SLICE_ROWS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(users * (n_items + 1) + items, return_index=True)``: the sorted distinct (user, item) keys and
    the index of each one's first event.  With events grouped by user (CSR order: the only order it is called
    with) it works slice by slice of ~1M rows cut at user boundaries, sorting each slice's packed (key, position)
    values in place, so its working memory is bounded by a slice and not ~40 B per event."""
    base = n_items + 1
    n = users.size
    if n == 0 or not bool((users[1:] >= users[:-1]).all()):
        return np.unique(users.astype(np.int64) * base + items.astype(np.int64), return_index=True)
    uniques, firsts = np.empty(n, np.int64), np.empty(n, np.intp)  # filled up to k: no lists to concatenate
    a = k = 0
    while a < n:
        b = min(n, a + slice_rows)
        if b < n:  # end the slice at a user boundary (a user longer than a slice gets a slice of its own)
            b = int(np.searchsorted(users, users[b - 1], side="right"))
        u0, m = int(users[a]), b - a
        local = (users[a:b] - u0).astype(np.int64) * base + items[a:b]
        pos_bits = max(1, (m - 1).bit_length())
        if (int(users[b - 1]) - u0 + 1) * base > 1 << (63 - pos_bits):  # too wide to pack beside a position
            uniq, first = np.unique(local, return_index=True)
        else:
            local <<= pos_bits
            local |= np.arange(m, dtype=np.int64)
            local.sort()
            key = local >> pos_bits
            new = np.empty(m, bool)
            new[0] = True
            np.not_equal(key[1:], key[:-1], out=new[1:])
            uniq, first = key[new], local[new] & ((1 << pos_bits) - 1)
        np.add(uniq, u0 * base, out=uniques[k:k + uniq.size])
        np.add(first, a, out=firsts[k:k + uniq.size])
        a, k = b, k + uniq.size
    if k < n // 2:  # many repeated pairs: do not hold the unused tail
        return uniques[:k].copy(), firsts[:k].copy()
    return uniques[:k], firsts[:k]


@dataclass
class TargetSet:
    users: np.ndarray  # int32 [n]
    positions: np.ndarray  # int64 [n]  absolute event index of the target; history = offsets[u] .. position
    items: np.ndarray  # int32 [n]  target item (== events_item[position])
    negatives: np.ndarray  # int32 [n, n_neg] sampled items the user never interacted with
    zero_shot: np.ndarray  # bool  [n]  history must be treated as empty (cold zero-shot instances)
    repeat: np.ndarray | None = None  # bool [n]  the target item occurs in the instance's own history

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def history_start(self, offsets: np.ndarray) -> np.ndarray:
        """First event index of each instance's history (== position for zero-shot instances)."""
        start = offsets[self.users].astype(np.int64)
        return np.where(self.zero_shot, self.positions, start)


@dataclass
class SequenceDataset:
    n_users: int
    n_items: int
    behavior_names: list[str]  # behavior_names[code - 1] is the name of code; codes start at 1
    target_behaviors: list[int]  # codes whose events are prediction targets (e.g. [buy]; every code for ML-1M)
    offsets: np.ndarray  # int64 [n_users + 2]; user u owns events offsets[u]:offsets[u+1] (user 0 owns none)
    items: np.ndarray  # int32 [n_events]
    behaviors: np.ndarray  # int8 [n_events]
    timestamps: np.ndarray  # int64 [n_events]
    train_end: np.ndarray  # int64 [n_users + 1]; training prefix of user u is offsets[u]:train_end[u]
    warm_users: np.ndarray  # int32
    cold_tune_users: np.ndarray  # int32
    cold_test_users: np.ndarray  # int32
    targets: dict[str, TargetSet]
    user_ids: np.ndarray  # original ids as strings, index = contiguous id (index 0 = "")
    item_ids: np.ndarray  # original ids as strings, index = contiguous id (index 0 = "")
    profile_fields: list[str] = field(default_factory=list)
    profile_vocab: list[list[str]] = field(default_factory=list)  # per field: value of code c is vocab[c-1]
    profiles: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.int32))  # [n_users+1, n_fields]; 0 = unknown
    meta: dict = field(default_factory=dict)

    @property
    def n_behaviors(self) -> int:
        return len(self.behavior_names)

    # ---- persistence: numpy arrays in one .npz (no pickle) + JSON for the rest -----------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {
            "offsets": self.offsets, "items": self.items, "behaviors": self.behaviors,
            "timestamps": self.timestamps, "train_end": self.train_end, "warm_users": self.warm_users,
            "cold_tune_users": self.cold_tune_users, "cold_test_users": self.cold_test_users,
            "user_ids": self.user_ids.astype(str), "item_ids": self.item_ids.astype(str), "profiles": self.profiles,
        }
        for name, ts in self.targets.items():
            for attr in ("users", "positions", "items", "negatives", "zero_shot", "repeat"):
                if getattr(ts, attr) is not None:
                    arrays[f"target.{name}.{attr}"] = getattr(ts, attr)
        np.savez(d / "arrays.npz", **arrays)
        info = {
            "n_users": self.n_users, "n_items": self.n_items, "behavior_names": self.behavior_names,
            "target_behaviors": self.target_behaviors, "targets": sorted(self.targets),
            "profile_fields": self.profile_fields, "profile_vocab": self.profile_vocab, "meta": self.meta,
        }
        (d / "dataset.json").write_text(json.dumps(info, indent=1, default=_json_default))

    @classmethod
    def load(cls, directory: str | Path) -> "SequenceDataset":
        d = Path(directory)
        info = json.loads((d / "dataset.json").read_text())
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        targets = {
            name: TargetSet(**{attr: a.get(f"target.{name}.{attr}") for attr in
                               ("users", "positions", "items", "negatives", "zero_shot", "repeat")})
            for name in info["targets"]
        }
        data = cls(
            n_users=info["n_users"], n_items=info["n_items"], behavior_names=info["behavior_names"],
            target_behaviors=info["target_behaviors"], offsets=a["offsets"], items=a["items"],
            behaviors=a["behaviors"], timestamps=a["timestamps"], train_end=a["train_end"],
            warm_users=a["warm_users"], cold_tune_users=a["cold_tune_users"], cold_test_users=a["cold_test_users"],
            targets=targets, user_ids=a["user_ids"], item_ids=a["item_ids"], profile_fields=info["profile_fields"],
            profile_vocab=info["profile_vocab"], profiles=a["profiles"], meta=info["meta"],
        )
        for ts in data.targets.values():  # split before the flag was stored
            if ts.repeat is None:
                ts.repeat = data.repeat_flags(ts)
        return data

    def repeat_flags(self, ts: TargetSet) -> np.ndarray:
        """bool [n]: whether each instance's target item occurs in its history (never for zero-shot)."""
        users = np.repeat(np.arange(self.n_users + 1, dtype=np.int64), np.diff(self.offsets[:self.n_users + 2]))
        first = first_occurrence(users, self.items, self.n_items)(ts.users, ts.items)
        return (first < ts.positions) & ~np.asarray(ts.zero_shot, bool)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def window_index(start: np.ndarray, end: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Event indices [n, width] of the last ``width`` events of each range start..end-1, left-padded, and which of
    them are events (the padding's index is 0: read it through the mask)."""
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    idx = end[:, None] - width + np.arange(width, dtype=np.int64)[None, :]  # [n, width]
    valid = idx >= start[:, None]
    return np.where(valid, idx, 0), valid


def gather_windows(data: SequenceDataset, start: np.ndarray, end: np.ndarray,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and behaviors [n, width] of events start..end-1 (last ``width`` of them), left-padded with 0."""
    idx, valid = window_index(start, end, width)
    items = np.where(valid, data.items[idx], 0).astype(np.int64)
    behaviors = np.where(valid, data.behaviors[idx], 0).astype(np.int64)
    return items, behaviors
