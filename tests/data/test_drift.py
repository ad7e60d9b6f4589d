"""The drift gate's profile and comparison on the real Taobao head (read by the real reader, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components.data.drift import (
    DriftConfig,
    DriftThresholds,
    compare_profiles,
    known_item_share,
    profile_data,
)
from components.data.readers import read_dataset


@pytest.fixture(scope="module")
def head(taobao_head: Path) -> pa.Table:
    return read_dataset("taobao", taobao_head).interactions


def drop_every_second_click(table: pa.Table) -> pa.Table:
    names = pc.cast(table.column("behavior"), pa.string()).to_numpy(zero_copy_only=False)
    clicks = np.flatnonzero(names == "click")
    keep = np.ones(table.num_rows, dtype=bool)
    keep[clicks[1::2]] = False
    return table.filter(pa.array(keep))


@pytest.fixture(scope="module")
def profile(head: pa.Table) -> dict:
    return profile_data(head, source="head")


def test_profile_of_the_head(head, profile):
    assert json.loads(json.dumps(profile)) == profile  # JSON-serialisable as is
    assert (profile["events"], profile["users"], profile["items"]) == (84_475, 815, 55_368)
    assert profile["behavior_counts"] == {"click": 75_872, "cart": 4_497, "fav": 2_356, "buy": 1_750}
    assert sum(profile["behavior_share"].values()) == pytest.approx(1.0)
    assert (profile["time_min"], profile["time_max"]) == (pc.min(head["timestamp"]).as_py(),
                                                          pc.max(head["timestamp"]).as_py())
    sketch = profile["item_sketch"]
    assert len(sketch["hashes"]) == sketch["k"] == 4096 and not sketch["exact"]
    assert sketch["hashes"] == sorted(sketch["hashes"])
    # int ids and the same ids as strings hash alike (a reader change of id type is not drift)
    as_text = head.set_column(1, "item_id", pc.cast(head["item_id"], pa.string()))
    assert profile_data(as_text)["item_sketch"]["hashes"] == sketch["hashes"]


def test_the_head_against_itself_passes(profile):
    report = compare_profiles(profile, profile)
    assert report.passed, report.failure_message()
    assert report.check("known_item_share").current == 1.0


def test_halved_clicks_fail_the_behavior_mix_with_the_right_numbers(head, profile):
    halved = drop_every_second_click(head)
    n_clicks = 75_872 - 75_872 // 2  # every second click row dropped: 37,936 left
    n = 84_475 - 75_872 // 2
    report = compare_profiles(profile, profile_data(halved, source="halved"))
    assert not report.passed
    assert [c.name for c in report.moved] == ["behavior_share[click]"]
    click = report.check("behavior_share[click]")
    assert click.reference == pytest.approx(75_872 / 84_475)  # 0.8982
    assert click.current == pytest.approx(n_clicks / n)  # 0.8151
    assert click.change == pytest.approx(n_clicks / n - 75_872 / 84_475)  # -0.0830
    assert click.threshold == "|change| <= 0.05"
    message = report.failure_message()
    assert "behavior_share[click]: reference 0.8982, current 0.8151, change -0.0830" in message
    assert report.check("events_count").current == n and report.check("events_count").passed
    # halving clicks keeps every remaining item known
    assert report.check("known_item_share").current == 1.0
    # a looser threshold lets it pass
    assert compare_profiles(profile, profile_data(halved), DriftThresholds(behavior_share_abs=0.1)).passed


def test_known_item_share_exact_and_estimated(head):
    """Split the head's items in two by id parity: the sketch estimate is close to the exact shares."""
    odd = pc.equal(pc.bit_wise_and(head["item_id"], 1), 1)
    ref, cur = head.filter(odd), head  # reference holds the odd items only
    exact_events = ref.num_rows / head.num_rows
    exact_distinct = pc.count_distinct(ref["item_id"]).as_py() / pc.count_distinct(head["item_id"]).as_py()
    share = known_item_share(profile_data(ref), profile_data(cur))
    assert not share["exact"] and share["sample_items"] > 1000
    assert share["distinct"] == pytest.approx(exact_distinct, abs=0.03)
    assert share["events"] == pytest.approx(exact_events, abs=0.05)
    # with a sketch big enough to hold every item, the share is exact
    big = known_item_share(profile_data(ref, sketch_k=100_000), profile_data(cur, sketch_k=100_000))
    assert big["exact"] and big["events"] == pytest.approx(exact_events) and big["distinct"] == pytest.approx(exact_distinct)
    # new data on items the champion never saw fails the known-item check
    report = compare_profiles(profile_data(head.filter(pc.invert(odd))), profile_data(ref))
    assert not report.check("known_item_share").passed and report.check("known_item_share").current == 0.0


def test_stale_data_fails_the_time_window():
    older = {"events": 10, "users": 2, "items": 1, "behavior_share": {"click": 1.0}, "time_min": 0,
             "time_max": 1_000_000, "item_sketch": {"k": 4, "exact": True, "hashes": [1], "events": [10]}}
    newer = {**older, "time_max": 1_000_000 + 7 * 86_400}
    assert compare_profiles(older, newer).passed
    moved = compare_profiles(newer, older).moved
    assert [c.name for c in moved] == ["time_window_end"] and moved[0].change == -7 * 86_400


def test_config_defaults_off_and_refuses_unknown_keys():
    assert DriftConfig.from_dict(None).mode == "off"
    cfg = DriftConfig.from_dict({"mode": "fail", "thresholds": {"behavior_share_abs": 0.1}})
    assert cfg.thresholds.behavior_share_abs == 0.1 and cfg.thresholds.users_rel == 0.5
    with pytest.raises(ValueError, match="mode"):
        DriftConfig.from_dict({"mode": "block"})
    with pytest.raises(ValueError, match="unknown setting"):
        DriftConfig.from_dict({"mode": "warn", "thresholds": {"behaviour_share": 0.1}})


def test_the_gate_decides_off_first_run_and_blocks_only_in_fail_mode():
    """The gate's decision without a pipeline or MLflow: off checks nothing; no champion profile (a first run)
    passes; a comparison that moved blocks the run in ``fail`` mode only (tests/pipeline/test_drift_gate.py runs
    it through the step against a real champion, whose profile the registry gateway fetches)."""
    from components.data.drift import DriftConfig, DriftDecision, drift_gate

    profile = {"events": 10, "users": 2, "items": 1, "behavior_share": {"click": 1.0}, "time_min": 0,
               "time_max": 1_000_000, "item_sketch": {"k": 4, "exact": True, "hashes": [1], "events": [10]}}
    assert not DriftConfig.from_dict(None).compares and DriftConfig.from_dict({"mode": "warn"}).compares
    off = drift_gate(DriftConfig.from_dict(None), profile, None)
    assert (off.checked, off.passed, off.blocks) == (False, True, False)
    first = drift_gate(DriftConfig.from_dict({"mode": "fail"}), profile, None)
    assert (first.checked, first.passed, first.blocks, first.reference) == (False, True, False, "none (first run)")
    assert first.metadata() == {"mode": "fail", "passed": True, "reference": "none (first run)"}
    assert DriftDecision("fail", passed=False, reference={}).blocks
    assert not DriftDecision("warn", passed=False, reference={}).blocks

    registered_as = {"name": "mbprompt-x", "version": "3", "run_id": "r", "alias": "champion"}
    champion = {**profile, "behavior_share": {"click": 0.5, "buy": 0.5}, "registered_as": registered_as}
    for mode, blocks in (("warn", False), ("fail", True)):
        moved = drift_gate(DriftConfig.from_dict({"mode": mode}), profile, champion, current_source="today")
        assert (moved.checked, moved.passed, moved.blocks, moved.reference) == (True, False, blocks, registered_as)
        assert moved.report.reference_source == "mbprompt-x v3 (champion)"
    with pytest.raises(ValueError, match="registered_as"):
        drift_gate(DriftConfig.from_dict({"mode": "fail"}), profile, profile)
