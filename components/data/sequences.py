"""The split, time-ordered multi-behavior sequences every model trains and is evaluated on.

Conventions (as in SASRec.pytorch and RecBole): ids are contiguous, 0 is padding; item ids run 1..n_items,
user ids 1..n_users, behavior codes 1..n_behaviors.  Each user's events are stored time-ordered in one CSR
block ``events[offsets[u]:offsets[u+1]]``.  An evaluation instance is (user, position, target item, negatives):
its history is every event of that user *before* ``position`` (all behaviors), its target is the item of the
event at ``position`` (always an event of the target behavior).  Negatives are drawn once, with the config's
seed, from items the user never touched, and stored here so every model is ranked against the same ones.

Target sets (keys of ``SequenceDataset.targets``):
  ``valid`` / ``test``  warm users, leave-one-out over target-behavior events (second-to-last / last).
  ``cold_valid``        cold tuning users, their last target-behavior event.
  ``cold_test``         cold test users: one few-shot instance (last target event, non-empty history) and one
                        zero-shot instance (first target event, history cut to nothing); ``zero_shot`` tells which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TargetSet:
    users: np.ndarray  # int32 [n]
    positions: np.ndarray  # int64 [n]  absolute event index of the target; history = offsets[u] .. position
    items: np.ndarray  # int32 [n]  target item (== events_item[position])
    negatives: np.ndarray  # int32 [n, n_neg] sampled items the user never interacted with
    zero_shot: np.ndarray  # bool  [n]  history must be treated as empty (cold zero-shot instances)

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

    def user_events(self, u: int) -> slice:
        return slice(int(self.offsets[u]), int(self.offsets[u + 1]))

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
            for attr in ("users", "positions", "items", "negatives", "zero_shot"):
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
            name: TargetSet(**{attr: a[f"target.{name}.{attr}"] for attr in
                               ("users", "positions", "items", "negatives", "zero_shot")})
            for name in info["targets"]
        }
        return cls(
            n_users=info["n_users"], n_items=info["n_items"], behavior_names=info["behavior_names"],
            target_behaviors=info["target_behaviors"], offsets=a["offsets"], items=a["items"],
            behaviors=a["behaviors"], timestamps=a["timestamps"], train_end=a["train_end"],
            warm_users=a["warm_users"], cold_tune_users=a["cold_tune_users"], cold_test_users=a["cold_test_users"],
            targets=targets, user_ids=a["user_ids"], item_ids=a["item_ids"], profile_fields=info["profile_fields"],
            profile_vocab=info["profile_vocab"], profiles=a["profiles"], meta=info["meta"],
        )


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
