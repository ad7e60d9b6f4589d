"""DRIFT GATE: profile the interactions a model is trained on, and compare new data with the champion's profile.

A scheduled run retrains on whatever the data volume holds that day.  When the data changed shape (a logging bug
halves the clicks, a catalogue migration renames every item, the export is a month old), the run should not quietly
train and maybe promote a model on it.  VALIDATE therefore

1. computes :func:`profile_data` of the canonical interactions it validates (the same table CLEAN then cleans;
   VALIDATE is the first step that has it, and profiling the table before cleaning keeps both sides of every
   comparison the same kind of data: the champion's profile was taken at the same point of its own run);
2. hands the profile on to REGISTER, which stores it with every registered version (artifact ``data/profile.json``
   of the version's MLflow run, and the version tag ``data_profile`` pointing at it; the registry gateway
   ``components.registry`` keeps both);
3. with ``drift.mode`` ``warn`` or ``fail``, gets the current champion's profile from the registry gateway
   (``components.registry.store.champion_profile``) and runs :func:`drift_gate`, which runs
   :func:`compare_profiles`: each check states its reference value, current value, change, threshold
   and verdict.  ``fail`` stops the run before anything is trained or registered; ``warn`` logs the report and
   goes on.  Without a champion (first run) or with a champion registered before profiles existed, the gate
   passes and says so.

What a profile holds: events, distinct users, distinct items, events per behavior and the behavior mix (shares),
the time window (min / max Unix seconds), and a **bottom-k item sketch** for the share of known items.

The item sketch.  "Which share of the new data's items did the champion see?" needs the champion's item set, and
the full sorted id list is far too big to keep per version (4M items in Taobao, more elsewhere).  The sketch keeps
the ``k`` smallest 64-bit hashes of the distinct item ids (a KMV / bottom-k sketch; ``k`` = 4096 by default, so at
most 4096 hashes and their event counts, about 100 KB of JSON whatever the data size), each with the item's event
count.  Hashing is pandas' vectorised SipHash-2-4 with its fixed key over the ids as strings (so int64 and string
ids of the same value agree, and the hash is the same on every machine and run).  To compare two sketches take
``tau`` = the smaller of the two sketches' largest hash (or infinity for a sketch that holds every item): the
current items with hash <= ``tau`` are a uniform random sample of the current item set (hashing is the
randomness), all of them are in the current sketch, and whether each one is a reference item is known *exactly*
(any reference item below ``tau`` is in the reference sketch).  So the known-item share is estimated on that
sample, distinct (share of items) and event-weighted (share of events on those items); the gated one is the
event-weighted share, i.e. how much of the new traffic falls on items the champion can recommend.  While a data
set has at most ``k`` distinct items the sketch *is* the whole item set and the shares are exact; beyond, the
standard error of the distinct share is about sqrt(p(1-p)/k) (under 0.008 for k = 4096).  A Bloom filter would
answer membership for every item, but its size grows with the item count and it cannot say how many items a
sample covers; a plain id list when small is exactly what the sketch degenerates to.

Nothing here imports ZenML or MLflow.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER

logger = logging.getLogger(__name__)

PROFILE_VERSION = 1
#: Default size of the bottom-k item sketch.
SKETCH_K = 4096
MODES = ("off", "warn", "fail")
# pandas' default SipHash key, spelled out so the hashes do not depend on a pandas default changing.
_HASH_KEY = "0123456789123456"


class DataDriftError(ValueError):
    """The new data moved further from the champion's training data than the drift thresholds allow."""


@dataclass
class DriftThresholds:
    """Limits beyond which a quantity counts as moved.  ``None`` turns a check into information only."""

    #: Largest allowed absolute change of any behavior's share of events (0.05 = five percentage points).
    behavior_share_abs: float | None = 0.05
    #: Largest allowed relative change of the number of distinct users / items / events (0.5 = +-50%).
    users_rel: float | None = 0.5
    items_rel: float | None = 0.5
    events_rel: float | None = 0.5
    #: Smallest allowed share of the new events that fall on items of the champion's training data.
    known_item_share_min: float | None = 0.5
    #: How many seconds the new data's window may end *before* the champion's: new data older than what the
    #: champion saw means a stale export.  One day of slack, so a sample or a re-export of the same days passes.
    time_end_lag_max_s: float | None = 86_400.0


@dataclass
class DriftConfig:
    """The ``drift`` parameter of the VALIDATE step: ``mode`` off (default), warn or fail, and the thresholds."""

    mode: str = "off"
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    sketch_k: int = SKETCH_K

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"drift.mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.sketch_k < 1:
            raise ValueError(f"drift.sketch_k must be >= 1, got {self.sketch_k}")

    @property
    def compares(self) -> bool:
        """Whether the gate compares data (mode warn or fail): only then does it need the champion's profile."""
        return self.mode != "off"

    @classmethod
    def from_dict(cls, values: dict | None, *, where: str = "steps.validate.parameters.drift") -> "DriftConfig":
        from components.settings import from_dict

        values = dict(values or {})
        thresholds = from_dict(DriftThresholds, values.pop("thresholds", None), where=f"{where}.thresholds")
        return from_dict(cls, {**values, "thresholds": thresholds}, where=where)


# --------------------------------------------------------------------------------------------------------------
# profile


def _hash_ids(values: pa.Array) -> np.ndarray:
    """Stable uint64 hashes of ids (int or string), via their string form."""
    text = pc.cast(values, pa.string()).to_numpy(zero_copy_only=False).astype(object)
    return pd.util.hash_array(text, hash_key=_HASH_KEY, categorize=False)


def profile_data(interactions: pa.Table, *, sketch_k: int = SKETCH_K, source: str = "") -> dict:
    """JSON-serialisable profile of a canonical interactions table (see the module docstring)."""
    n = interactions.num_rows
    users = pc.count_distinct(interactions.column(USER)).as_py() if n else 0
    behavior = interactions.column(BEHAVIOR)
    counts: dict[str, int] = {}
    if n:
        vc = pc.value_counts(pc.cast(behavior, pa.string()))
        counts = {v["values"].as_py(): int(v["counts"].as_py()) for v in vc}
    # every behavior the column's dictionary knows, with zero counts too, so the mix always has the same keys
    if isinstance(behavior.type, pa.DictionaryType) and behavior.num_chunks:
        for name in behavior.chunk(0).dictionary.to_pylist():
            counts.setdefault(name, 0)
    counts = {k: counts[k] for k in sorted(counts, key=lambda k: -counts[k])}
    shares = {k: (v / n if n else 0.0) for k, v in counts.items()}

    ts = interactions.column(TIMESTAMP)
    mm = pc.min_max(ts).as_py() if n else {"min": None, "max": None}

    items = interactions.column(ITEM)
    if n:
        vc = pc.value_counts(items.combine_chunks() if isinstance(items, pa.ChunkedArray) else items)
        values, item_events = vc.field("values"), vc.field("counts").to_numpy()
        hashes = _hash_ids(values)
        order = np.argsort(hashes, kind="stable")[:sketch_k]
        n_items = len(hashes)
    else:
        hashes, item_events, order, n_items = np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, int), 0
    return {
        "profile_version": PROFILE_VERSION,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": int(n),
        "users": int(users),
        "items": int(n_items),
        "behavior_counts": counts,
        "behavior_share": shares,
        "time_min": mm["min"],
        "time_max": mm["max"],
        "item_sketch": {
            "kind": "bottom-k",
            "hash": "siphash-2-4 of str(item_id), key 0123456789123456 (pandas.util.hash_array)",
            "k": int(sketch_k),
            "exact": bool(n_items <= sketch_k),
            "hashes": [int(h) for h in hashes[order]],
            "events": [int(c) for c in item_events[order]],
        },
    }


def known_item_share(reference: dict, current: dict) -> dict:
    """Share of the current data's items (distinct, and weighted by events) that the reference data holds,
    estimated from the two bottom-k sketches (exact while both sketches hold every item)."""
    rs, cs = reference["item_sketch"], current["item_sketch"]
    r_h = np.asarray(rs["hashes"], dtype=np.uint64)
    c_h = np.asarray(cs["hashes"], dtype=np.uint64)
    c_e = np.asarray(cs["events"], dtype=np.int64)
    taus = [np.uint64(s_h.max()) for s, s_h in ((rs, r_h), (cs, c_h)) if not s["exact"] and len(s_h)]
    sample = c_h <= min(taus) if taus else np.ones(len(c_h), dtype=bool)
    known = np.isin(c_h, r_h) & sample
    n_sample, e_sample = int(sample.sum()), int(c_e[sample].sum())
    return {
        "distinct": (int(known.sum()) / n_sample) if n_sample else None,
        "events": (int(c_e[known].sum()) / e_sample) if e_sample else None,
        "sample_items": n_sample,
        "exact": not taus,
    }


# --------------------------------------------------------------------------------------------------------------
# comparison


@dataclass
class DriftCheck:
    name: str
    reference: Any
    current: Any
    change: float | None
    threshold: str
    passed: bool
    unit: str = ""

    def describe(self) -> str:
        change = "" if self.change is None else f", change {_num(self.change, self.unit, signed=True)}"
        return (f"{self.name}: reference {_num(self.reference, self.unit)}, current {_num(self.current, self.unit)}"
                f"{change} (allowed: {self.threshold})")


def _num(v: Any, unit: str = "", signed: bool = False) -> str:
    if v is None:
        return "n/a"
    if unit == "s" and not signed and isinstance(v, (int, float)):
        return f"{int(v)} [{datetime.fromtimestamp(v, timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}]"
    if unit == "s":
        return f"{v:+,.0f} s"
    if unit == "rel" and signed:  # relative change of a count
        return "inf" if math.isinf(v) else f"{100 * v:+.1f}%"
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:+,}" if signed else f"{v:,}"
    return str(v)


@dataclass
class DriftReport:
    checks: list[DriftCheck]
    reference_source: str = ""
    current_source: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def moved(self) -> list[DriftCheck]:
        return [c for c in self.checks if not c.passed]

    def check(self, name: str) -> DriftCheck:
        return next(c for c in self.checks if c.name == name)

    def failure_message(self) -> str:
        head = (f"data drift of {self.current_source or 'the new data'} against {self.reference_source or 'the champion'}"
                f": {len(self.moved)} of {len(self.checks)} checks moved")
        return head + "\n" + "\n".join(f"  {c.describe()}" for c in self.moved)

    def to_json(self) -> dict:
        return json.loads(json.dumps({"passed": self.passed, "reference": self.reference_source,
                                      "current": self.current_source,
                                      "checks": [asdict(c) for c in self.checks]}, default=str))

    def to_markdown(self) -> str:
        lines = [f"**Drift of {self.current_source} against {self.reference_source}: "
                 f"{'passed' if self.passed else 'MOVED'}**", "",
                 "| check | reference | current | change | allowed | result |", "|---|---:|---:|---:|---|---|"]
        for c in self.checks:
            change = "" if c.change is None else _num(c.change, c.unit, signed=True)
            cells = [c.name, _num(c.reference, c.unit), _num(c.current, c.unit), change, c.threshold,
                     "pass" if c.passed else "MOVED"]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        return "\n".join(lines) + "\n"


def _rel(ref: float, cur: float) -> float | None:
    return (cur - ref) / ref if ref else (None if cur == ref else math.inf)


def compare_profiles(reference: dict, current: dict, thresholds: DriftThresholds | None = None, *,
                     reference_source: str = "", current_source: str = "") -> DriftReport:
    """One :class:`DriftCheck` per compared quantity; a check with a ``None`` threshold only informs."""
    t = thresholds or DriftThresholds()
    checks: list[DriftCheck] = []
    for key, limit in (("users", t.users_rel), ("items", t.items_rel), ("events", t.events_rel)):
        ref, cur = reference[key], current[key]
        change = _rel(ref, cur)
        ok = limit is None or (change is not None and abs(change) <= limit)
        checks.append(DriftCheck(f"{key}_count", ref, cur, change,
                                 "any" if limit is None else f"|relative change| <= {100 * limit:g}%", ok, "rel"))
    names = list(dict.fromkeys([*reference["behavior_share"], *current["behavior_share"]]))
    for name in names:
        ref = float(reference["behavior_share"].get(name, 0.0))
        cur = float(current["behavior_share"].get(name, 0.0))
        limit = t.behavior_share_abs
        ok = limit is None or abs(cur - ref) <= limit + 1e-12
        checks.append(DriftCheck(f"behavior_share[{name}]", ref, cur, cur - ref,
                                 "any" if limit is None else f"|change| <= {limit:g}", ok))
    share = known_item_share(reference, current)
    how = "exact" if share["exact"] else f"estimated on {share['sample_items']:,} sampled items"
    limit = t.known_item_share_min
    ev = share["events"]
    checks.append(DriftCheck("known_item_share", 1.0, ev, None if ev is None else ev - 1.0,
                             ("any" if limit is None else f">= {limit:g}") + f"; {how}",
                             limit is None or ev is None or ev >= limit))
    checks.append(DriftCheck("known_item_share_distinct", 1.0, share["distinct"],
                             None if share["distinct"] is None else share["distinct"] - 1.0, f"any; {how}", True))
    ref_end, cur_end = reference["time_max"], current["time_max"]
    limit = t.time_end_lag_max_s
    if ref_end is None or cur_end is None:
        checks.append(DriftCheck("time_window_end", ref_end, cur_end, None, "n/a", True, "s"))
    else:
        lag_ok = limit is None or cur_end - ref_end >= -limit
        checks.append(DriftCheck("time_window_end", ref_end, cur_end, cur_end - ref_end,
                                 "any" if limit is None else f"not earlier than the reference's by more than {limit:g} s",
                                 lag_ok, "s"))
    checks.append(DriftCheck("time_window_start", reference["time_min"], current["time_min"],
                             None if reference["time_min"] is None or current["time_min"] is None
                             else current["time_min"] - reference["time_min"], "any", True, "s"))
    return DriftReport(checks, reference_source=reference_source or reference.get("source", ""),
                       current_source=current_source or current.get("source", ""))


# --------------------------------------------------------------------------------------------------------------
# the gate


@dataclass
class DriftDecision:
    """What the drift gate decided for one run: ``passed``, the comparison (``report``, None when nothing was
    compared) and what identifies the reference."""

    mode: str
    passed: bool
    reference: dict | str
    report: DriftReport | None = None

    @property
    def checked(self) -> bool:
        """The data was compared: the gate was on and the champion had a profile."""
        return self.report is not None

    @property
    def blocks(self) -> bool:
        """The run must stop: the gate fails on drift and the data drifted."""
        return self.mode == "fail" and not self.passed

    def metadata(self) -> dict:
        """The summary the validate step records with its outputs."""
        out: dict = {"mode": self.mode, "passed": self.passed, "reference": self.reference}
        if self.report is not None:
            out["moved"] = [c.describe() for c in self.report.moved]
        return out


def drift_gate(gate: DriftConfig, profile: dict, reference: dict | None, *,
               current_source: str = "") -> DriftDecision:
    """Compare ``profile`` with ``reference``, the champion's training data profile as the registry gateway
    returns it (``components.registry.store.champion_profile``: with ``registered_as``), under ``gate``: mode off
    checks nothing; no reference (a first run, or a champion registered without a profile) passes; otherwise the
    comparison decides.  Logs the outcome; raising is the caller's (``DriftDecision.blocks``), so it can first
    keep the report."""
    if not gate.compares:
        return DriftDecision(mode="off", passed=True, reference="none (gate off)")
    if reference is None:
        logger.info("drift gate (%s): no champion profile to compare with: passed", gate.mode)
        return DriftDecision(mode=gate.mode, passed=True, reference="none (first run)")
    ref = reference.get("registered_as")
    if ref is None:
        raise ValueError("drift gate: the reference profile does not name the version it belongs to "
                         "('registered_as'); pass the one components.registry.store.champion_profile returns")
    report = compare_profiles(reference, profile, gate.thresholds, current_source=current_source,
                              reference_source=f"{ref['name']} v{ref['version']} ({ref['alias']})")
    if report.passed:
        logger.info("drift gate (%s): %s: nothing moved", gate.mode, report.reference_source)
    elif gate.mode != "fail":
        logger.warning("drift gate (warn, run continues): %s", report.failure_message())
    return DriftDecision(mode=gate.mode, passed=report.passed, reference=ref, report=report)
