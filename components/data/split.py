"""Warm/cold user split, leave-one-out targets and fixed sampled negatives.

Users are warm or cold by how many *target-behavior* events they have (PPR: fewer than 10 is cold).
- Warm users pre-train.  Leave-one-out over their target events: the last is ``test``, the second-to-last is
  ``valid``, and the training prefix is every event (all behaviors) before the validation target.
- Cold users are split (seeded) into tuning and test users, ``cold_tune_share`` of them for tuning.  A tuning
  user's last target event is ``cold_valid``; its training prefix is everything before it.  A test user gives a
  few-shot instance (its last target event, with the history before it) and a zero-shot instance (its first target
  event, with no history at all).
- Data with no naturally cold users (every ML-1M user has at least 20 ratings) gets *simulated* cold users: a
  seeded share of users whose histories are cut after their k-th target event, k drawn in
  [2, cold_threshold - 1], as cold-start papers do.  ``meta["cold_mode"]`` says which was used.
- Users with no target event at all cannot be evaluated or tuned and are left out (counted in ``meta``).
- When more than ``MOSTLY_COLD`` (half) of the users with a target event end up cold, which on short-history data
  (Amazon Beauty, 5-core) happens with PPR's threshold of 10, the split logs a warning with the counts and keeps it
  in ``meta["warnings"]``: pre-training then sees only a minority of the users.

History items (``history_items``; the default is the dataset's entry in ``components/data/readers/registry.py``):
- ``candidates`` (multi-behavior logs): an item the user already touched is a legitimate answer (most next buys on
  e-commerce logs are items clicked or carted before).  Negatives are drawn uniformly from every item except the
  instance's target; evaluation ranks against every item.
- ``excluded`` (single-consumption data: a movie is rated once): history items are never candidates or answers.
  Negatives are drawn from items the user never interacted with (in any behavior, in its whole original history,
  including what a simulated cut removed), and instances whose target already occurs in their own history are
  dropped (counted in ``meta["repeat_targets_dropped"]``): keeping them while excluding the rest of the history
  would leave a repeat target as the only familiar candidate.
Either way no candidate set depends on which item is the target.  Negatives are distinct within an instance and
drawn once from the config's seed.  Every instance carries ``repeat``: whether its target occurs in its own
history (the ``test_repeat`` / ``test_new`` groups of the evaluation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from components.data.clean import CleanResult
from components.data.datasets import default_history_items
from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER
from components.data.sequences import HISTORY_ITEMS, SequenceDataset, TargetSet

logger = logging.getLogger(__name__)


@dataclass
class SplitConfig:
    #: Behavior names whose events are prediction targets; None = every behavior (e.g. every ML-1M rating).
    target_behaviors: list[str] | None = None
    #: Users with fewer target events than this are cold (PPR uses 10).
    cold_threshold: int = 10
    #: "auto": simulate cold users only when fewer than ``min_natural_cold_share`` of users are naturally cold.
    cold_mode: str = "auto"  # auto | natural | simulated
    min_natural_cold_share: float = 0.05
    simulated_cold_share: float = 0.2
    cold_tune_share: float = 0.8
    n_negatives: int = 99
    #: "candidates" | "excluded" | None (the dataset's default): are items of the user's history candidates?
    history_items: str | None = None
    seed: int = 42


class SplitError(ValueError):
    pass


#: Share of users (of those with a target event) above which a split that turned them cold is warned about.
MOSTLY_COLD = 0.5


@dataclass
class _Events:
    """The cleaned log as arrays, in user-then-time order, and which events are targets."""

    names: list[str]  # behavior names; code = index + 1
    target_codes: list[int]
    users: np.ndarray  # int32 [n]
    items: np.ndarray  # int32 [n]
    behaviors: np.ndarray  # int8 [n]
    timestamps: np.ndarray  # int64 [n]
    is_target: np.ndarray  # bool [n]
    offsets: np.ndarray  # int64 [n_users + 2]: user u's events are offsets[u]:offsets[u + 1]

    def keep(self, mask: np.ndarray) -> None:
        """Drop the events outside ``mask`` (offsets follow)."""
        self.users, self.items, self.behaviors, self.timestamps, self.is_target = (
            self.users[mask], self.items[mask], self.behaviors[mask], self.timestamps[mask], self.is_target[mask])
        self.offsets[1:] = np.cumsum(np.bincount(self.users, minlength=len(self.offsets) - 1))


@dataclass
class _Users:
    """Who is warm, who is cold (tuning / test), and how that was decided."""

    mode: str  # "natural" | "simulated"
    share_natural: float
    has_target: np.ndarray  # bool [n_users + 1]
    warm: np.ndarray  # int32, ascending
    cold_tune: np.ndarray  # int32, ascending
    cold_test: np.ndarray  # int32, ascending


def _checked_history_items(cfg: SplitConfig, dataset: str | None) -> str:
    history_items = cfg.history_items or default_history_items(dataset)
    if history_items not in HISTORY_ITEMS:
        raise SplitError(f"history_items must be one of {HISTORY_ITEMS}, got {history_items!r}")
    if cfg.cold_threshold < 3:
        raise SplitError(f"cold_threshold must be >= 3 (warm users need train, valid and test targets), "
                         f"got {cfg.cold_threshold}")
    if cfg.cold_mode not in ("auto", "natural", "simulated"):
        raise SplitError(f"cold_mode must be auto, natural or simulated, got {cfg.cold_mode!r}")
    return history_items


def _events(clean: CleanResult, cfg: SplitConfig) -> _Events:
    t = clean.interactions
    names = t.column(BEHAVIOR).chunk(0).dictionary.to_pylist()
    users = t.column(USER).to_numpy()  # int32 (read only: never written, only filtered into new arrays)
    behaviors = (t.column(BEHAVIOR).combine_chunks().indices.to_numpy(zero_copy_only=False) + 1).astype(np.int8)
    if cfg.target_behaviors is None:
        target_codes = list(range(1, len(names) + 1))
    else:
        unknown = [b for b in cfg.target_behaviors if b not in names]
        if unknown:
            raise SplitError(f"target behavior(s) {unknown} not in the data's behaviors {names}")
        target_codes = [names.index(b) + 1 for b in cfg.target_behaviors]
    offsets = np.zeros(len(clean.user_ids) + 2, np.int64)
    np.cumsum(np.bincount(users, minlength=len(clean.user_ids) + 1), out=offsets[1:])
    return _Events(names, target_codes, users, t.column(ITEM).to_numpy().astype(np.int32), behaviors,
                   t.column(TIMESTAMP).to_numpy().astype(np.int64), np.isin(behaviors, target_codes), offsets)


def _assign_users(ev: _Events, cfg: SplitConfig, rng: np.random.Generator) -> _Users:
    """Warm and cold users; in simulated mode a seeded share of warm users becomes cold by cutting their histories
    (``ev`` loses the cut events)."""
    n_users = len(ev.offsets) - 2
    n_target = np.bincount(ev.users[ev.is_target], minlength=n_users + 1)
    has_target = n_target >= 1
    has_target[0] = False
    natural_cold = has_target & (n_target < cfg.cold_threshold)
    warm = n_target >= cfg.cold_threshold
    share_natural = float(natural_cold.sum() / max(1, has_target.sum()))
    mode = cfg.cold_mode
    if mode == "auto":
        mode = "natural" if share_natural >= cfg.min_natural_cold_share else "simulated"
    cold = natural_cold
    if mode == "simulated":
        candidates = np.flatnonzero(warm)
        n_sim = int(round(cfg.simulated_cold_share * candidates.size))
        chosen = np.sort(rng.choice(candidates, size=n_sim, replace=False))
        k = rng.integers(2, cfg.cold_threshold, size=n_sim)  # keep k target events, 2 <= k <= threshold-1
        target_pos = np.flatnonzero(ev.is_target)
        cut_after = np.full(n_users + 1, -1, np.int64)  # keep a simulated cold user's events < this index
        cut_after[chosen] = target_pos[np.searchsorted(target_pos, ev.offsets[chosen]) + k - 1] + 1
        warm[chosen] = False
        cold = np.zeros_like(warm)
        cold[chosen] = True
        if n_sim:
            for_user = cut_after[ev.users]
            keep = (for_user < 0) | (np.arange(len(ev.users)) < for_user)
            ev.keep(keep)
            logger.info("simulated %d cold users by cutting their histories (%d events removed)", n_sim,
                        int((~keep).sum()))
    cold_users = np.flatnonzero(cold).astype(np.int32)
    cold_users = cold_users[rng.permutation(cold_users.size)]
    n_tune = int(round(cfg.cold_tune_share * cold_users.size))
    return _Users(mode, share_natural, has_target, np.flatnonzero(warm).astype(np.int32),
                  np.sort(cold_users[:n_tune]), np.sort(cold_users[n_tune:]))


def _mostly_cold_warning(who: _Users, cfg: SplitConfig, target_behaviors: list[str]) -> str | None:
    """The warning text when more than ``MOSTLY_COLD`` of the users with a target event are cold, else None."""
    n_users = int(who.has_target[1:].sum())
    n_cold = int(who.cold_tune.size + who.cold_test.size)
    if n_users == 0 or n_cold <= MOSTLY_COLD * n_users:
        return None
    if who.mode == "natural":
        why = (f"they have fewer than cold_threshold={cfg.cold_threshold} events of target behavior(s) "
               f"{target_behaviors}")
        fix = ("lower steps.split.parameters.settings.cold_threshold (>= 3) if most users should pre-train, or "
               "keep it if cold-start users are the point")
    else:
        why = f"simulated_cold_share={cfg.simulated_cold_share} of the warm users were made cold"
        fix = "lower steps.split.parameters.settings.simulated_cold_share"
    return (f"split: {n_cold:,} of {n_users:,} users ({n_cold / n_users:.1%}) are cold ({who.mode}: {why}); only "
            f"{who.warm.size:,} warm users pre-train. To change it, {fix}")


def _instances(ev: _Events, who: _Users) -> tuple[np.ndarray, dict[str, tuple]]:
    """(each user's training-prefix end, the instances of every target set as (users, target positions,
    zero-shot flags or None)).  Leave-one-out over target events; a cold test user gives a few-shot instance (when
    it has history before its last target) and a zero-shot one (its first target, no history)."""
    tpos = np.flatnonzero(ev.is_target)  # positions of target events, grouped by user, time-ordered
    first_t = np.searchsorted(ev.users[tpos], np.arange(len(ev.offsets)))  # index into tpos of a user's first
    last_t = first_t[1:] - 1  # index into tpos of each user's last target event (valid where the user has one)
    valid_pos, test_pos = tpos[last_t[who.warm] - 1], tpos[last_t[who.warm]]
    cold_valid_pos, few_pos = tpos[last_t[who.cold_tune]], tpos[last_t[who.cold_test]]
    train_end = ev.offsets[:-1].copy()  # default: an empty training prefix
    train_end[who.warm] = valid_pos
    train_end[who.cold_tune] = cold_valid_pos
    has_history = few_pos > ev.offsets[who.cold_test]
    zero_pos = tpos[first_t[who.cold_test]]
    return train_end, {
        "valid": (who.warm, valid_pos, None),
        "test": (who.warm, test_pos, None),
        "cold_valid": (who.cold_tune, cold_valid_pos, None),
        "cold_test": (np.concatenate([who.cold_test[has_history], who.cold_test]),
                      np.concatenate([few_pos[has_history], zero_pos]),
                      np.concatenate([np.zeros(int(has_history.sum()), bool), np.ones(who.cold_test.size, bool)])),
    }


def _target_sets(ev: _Events, instances: dict[str, tuple], sampler: _NegativeSampler, n_items: int,
                 history_items: str) -> tuple[dict[str, TargetSet], dict[str, int]]:
    """The target sets with their negatives and repeat flags; under ``excluded`` the instances whose target is
    in their own history are dropped (counted per set)."""
    # The first event of each instance's (user, target item), for these pairs only (not a table of every pair).
    sizes = [u.size for u, _, _ in instances.values()]
    firsts = np.split(_first_index(ev.users, ev.items, n_items,
                                   np.concatenate([u for u, _, _ in instances.values()]),
                                   np.concatenate([ev.items[pos] for _, pos, _ in instances.values()])),
                      np.cumsum(sizes)[:-1])
    kept, dropped = {}, {}
    for (name, (u, pos, zero_shot)), first in zip(instances.items(), firsts):
        zero_shot = np.zeros(u.size, bool) if zero_shot is None else zero_shot
        # A target is a repeat when the user's first event on that item comes before it (zero-shot: no history).
        repeat = (first < pos) & ~zero_shot
        if history_items == "excluded":
            dropped[name] = int(repeat.sum())
            u, pos, zero_shot, repeat = u[~repeat], pos[~repeat], zero_shot[~repeat], repeat[~repeat]
        kept[name] = (u, pos, zero_shot, repeat)
    targets = {name: sampler.target_set(u, pos, ev.items, zero_shot=zero_shot, repeat=repeat)
               for name, (u, pos, zero_shot, repeat) in kept.items()}
    if dropped and any(dropped.values()):
        logger.info("history_items=excluded: dropped %s instances whose target is in their own history", dropped)
    return targets, dropped


def build_sequences(clean: CleanResult, profiles: pa.Table | None, cfg: SplitConfig,
                    dataset: str | None = None) -> SequenceDataset:
    """The split of ``clean`` under ``cfg``; ``dataset`` (the pipeline's dataset name) picks the default of
    ``history_items`` when the config leaves it unset."""
    history_items = _checked_history_items(cfg, dataset)
    rng = np.random.default_rng(cfg.seed)
    ev = _events(clean, cfg)
    n_users, n_items = len(clean.user_ids), len(clean.item_ids)
    # Every (user, item) pair ever seen, before any simulated cut: negatives must avoid all of them (only under
    # ``excluded``; the keys are sorted and deduplicated in place, which is faster than np.unique's hashing).
    seen = _unique_pairs(ev.users, ev.items, n_items) if history_items == "excluded" else None
    who = _assign_users(ev, cfg, rng)
    train_end, instances = _instances(ev, who)
    sampler = _NegativeSampler(seen, n_items, cfg.n_negatives, rng)
    targets, dropped = _target_sets(ev, instances, sampler, n_items, history_items)

    fields, vocab, prof = _encode_profiles(profiles, clean.user_ids, n_users)
    meta = {
        "cold_mode": who.mode, "natural_cold_share": who.share_natural, "cold_threshold": cfg.cold_threshold,
        "n_negatives": cfg.n_negatives, "seed": cfg.seed,
        "target_behaviors": [ev.names[c - 1] for c in ev.target_codes], "history_items": history_items,
        "repeat_share": {k: float(v.repeat.mean()) if len(v) else float("nan") for k, v in targets.items()},
        **({"repeat_targets_dropped": dropped} if history_items == "excluded" else {}),
        "n_warm_users": int(who.warm.size), "n_cold_tune_users": int(who.cold_tune.size),
        "n_cold_test_users": int(who.cold_test.size), "n_users_without_target": int((~who.has_target[1:]).sum()),
        "n_events": int(ev.users.size), "targets": {k: len(v) for k, v in targets.items()},
    }
    logger.info("split (%s cold): %d warm, %d cold tune, %d cold test users; targets %s", who.mode, who.warm.size,
                who.cold_tune.size, who.cold_test.size, meta["targets"])
    cold_warning = _mostly_cold_warning(who, cfg, meta["target_behaviors"])
    meta["warnings"] = [cold_warning] if cold_warning else []
    if cold_warning:
        logger.warning(cold_warning)
    if who.warm.size == 0:
        raise SplitError(f"no warm users: no user has >= {cfg.cold_threshold} events of target behavior(s) "
                         f"{meta['target_behaviors']}; lower split.cold_threshold or pick another target")
    return SequenceDataset(
        n_users=n_users, n_items=n_items, behavior_names=ev.names, target_behaviors=ev.target_codes,
        offsets=ev.offsets, items=ev.items.astype(np.int32, copy=False), behaviors=ev.behaviors,
        timestamps=ev.timestamps,
        train_end=train_end, warm_users=who.warm, cold_tune_users=who.cold_tune.astype(np.int32),
        cold_test_users=who.cold_test.astype(np.int32), targets=targets,
        user_ids=np.concatenate([[""], clean.user_ids.to_numpy(zero_copy_only=False).astype(str)]),
        item_ids=np.concatenate([[""], clean.item_ids.to_numpy(zero_copy_only=False).astype(str)]),
        profile_fields=fields, profile_vocab=vocab, profiles=prof, meta=meta,
    )


#: Events per slice of :func:`_first_index`.
_SLICE_ROWS = 1 << 20


def _first_index(users: np.ndarray, items: np.ndarray, n_items: int, q_users: np.ndarray, q_items: np.ndarray,
                 slice_rows: int = _SLICE_ROWS) -> np.ndarray:
    """``first_occurrence(users, items, n_items)(q_users, q_items)`` (events in CSR order; int64, a huge value
    where the pair never occurs), computed for the queried pairs only: the events are scanned slice by slice
    against the sorted distinct query keys, so memory is bounded by the queries and a slice, not the events."""
    base = n_items + 1
    never = np.iinfo(np.int64).max
    q = q_users.astype(np.int64) * base + q_items
    keys = np.unique(q)
    first = np.full(keys.size, never, np.int64)
    n = users.size
    for a in range(0, n, slice_rows):
        b = min(n, a + slice_rows)
        ev = users[a:b].astype(np.int64) * base + items[a:b]
        lo, hi = np.searchsorted(keys, [int(ev.min()), int(ev.max())], side="left")
        sub = keys[lo:hi + 1]
        if sub.size == 0:
            continue
        at = np.searchsorted(sub, ev).clip(max=sub.size - 1)
        hit = np.flatnonzero(sub[at] == ev)
        if hit.size == 0:
            continue
        k, i = np.unique(at[hit], return_index=True)  # each key's first hit in this slice
        k += lo
        first[k] = np.minimum(first[k], hit[i] + a)
    return first[np.searchsorted(keys, q)]


def _unique_pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * (n_items + 1) + item`` keys (what ``np.unique`` of them returns)."""
    keys = users.astype(np.int64) * (n_items + 1)
    keys += items
    keys.sort()
    new = np.empty(keys.size, bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return keys[new]


class _NegativeSampler:
    """Uniform negatives, distinct within an instance, fully vectorised.  With ``seen_keys`` (sorted
    ``user * (n_items + 1) + item`` of every pair ever seen) they avoid every item the user touched; without, they
    avoid only the instance's own target."""

    def __init__(self, seen_keys: np.ndarray | None, n_items: int, n_neg: int, rng: np.random.Generator):
        self.seen, self.n_items, self.n_neg, self.rng = seen_keys, n_items, n_neg, rng

    def target_set(self, users: np.ndarray, positions: np.ndarray, items: np.ndarray,
                   zero_shot: np.ndarray | None = None, repeat: np.ndarray | None = None) -> TargetSet:
        users = np.asarray(users, np.int32)
        positions = np.asarray(positions, np.int64)
        target_items = items[positions].astype(np.int32)
        if self.seen is not None:
            negatives = self.sample(users, self.seen)
        else:  # every item but the target: group = instance row, the one excluded key its target
            rows = np.arange(users.size, dtype=np.int64)
            negatives = self.sample(rows, rows * (self.n_items + 1) + target_items)
        return TargetSet(users=users, positions=positions, items=target_items, negatives=negatives,
                         zero_shot=np.zeros(users.size, bool) if zero_shot is None else zero_shot,
                         repeat=np.zeros(users.size, bool) if repeat is None else np.asarray(repeat, bool))

    #: Rows of candidates checked at a time (the checks' temporaries are ~60 B per candidate).
    BLOCK_ROWS = 16_384

    def _fill(self, users: np.ndarray, seen: np.ndarray, out: np.ndarray, filled: np.ndarray, todo: np.ndarray,
              cand: np.ndarray) -> None:
        """Append to the rows ``todo`` of ``out`` their candidates ``cand`` that are not seen, not repeated and
        still needed, in draw order."""
        m, base = self.n_neg, self.n_items + 1
        u = users[todo].astype(np.int64)[:, None]
        keys = u * base + cand
        pos = np.searchsorted(seen, keys).clip(max=seen.size - 1)
        ok = seen[pos] != keys
        del keys, pos
        # Drop repeats within a row and of what the row already holds; keep the draw order (unbiased).
        have = np.concatenate([out[todo], cand], axis=1)
        order = np.argsort(have, axis=1, kind="stable")
        s = np.take_along_axis(have, order, axis=1)
        dup_sorted = np.zeros_like(s, bool)
        dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        del have, order, s, dup_sorted
        ok &= ~dup[:, m:]
        rank = np.cumsum(ok, axis=1) + filled[todo][:, None]
        take = ok & (rank <= m)
        rows, cols = np.nonzero(take)
        out[todo[rows], rank[rows, cols] - 1] = cand[rows, cols]
        filled[todo] = np.minimum(rank[:, -1], m)

    def sample(self, users: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """``n_neg`` distinct items per row of ``users`` (a group id per row), none of them among the sorted
        keys ``seen`` (``group * (n_items + 1) + item``)."""
        n, m, base = users.size, self.n_neg, self.n_items + 1
        out = np.zeros((n, m), np.int32)
        filled = np.zeros(n, np.int64)
        todo = np.arange(n)
        for _ in range(50):
            if todo.size == 0:
                return out
            width = 2 * m + 8
            # Rows are independent and drawing them block by block gives the same stream as one draw of all rows
            # (tests/data/test_bounded_memory.py), so the candidates and their checks stay bounded by a block.
            for b in range(0, todo.size, self.BLOCK_ROWS):
                rows = todo[b:b + self.BLOCK_ROWS]
                self._fill(users, seen, out, filled, rows,
                           self.rng.integers(1, self.n_items + 1, size=(rows.size, width)))
            todo = todo[filled[todo] < m]
        free = self.n_items - np.diff(np.searchsorted(seen, users[todo][:, None].astype(np.int64) * base
                                                      + np.array([0, base])), axis=1).ravel()
        raise SplitError(f"cannot draw {m} distinct negatives for {todo.size} instance(s): e.g. user "
                         f"{int(users[todo[0]])} has only {int(free[0])} candidate items (history_items setting); "
                         f"lower split.n_negatives")


def _encode_profiles(profiles: pa.Table | None, user_ids: pa.Array, n_users: int):
    """Integer codes per profile field for contiguous users (0 = unknown or no profile row)."""
    if profiles is None or profiles.num_rows == 0 or profiles.num_columns <= 1:
        return [], [], np.zeros((n_users + 1, 0), np.int32)
    fields = [c for c in profiles.column_names if c != USER]
    pos = {uid: i + 1 for i, uid in enumerate(user_ids.to_pylist())}
    prof_users = profiles.column(USER).cast(pa.string()).to_pylist()
    rows = np.array([pos.get(u, 0) for u in prof_users], np.int64)
    out = np.zeros((n_users + 1, len(fields)), np.int32)
    vocab = []
    for j, f in enumerate(fields):
        vals = profiles.column(f).cast(pa.string()).to_pylist()
        v = sorted({x for x in vals if x is not None})
        vocab.append(v)
        code = {x: i + 1 for i, x in enumerate(v)}
        codes = np.array([code.get(x, 0) if x is not None else 0 for x in vals], np.int32)
        mask = rows > 0
        out[rows[mask], j] = codes[mask]
    return fields, vocab, out
