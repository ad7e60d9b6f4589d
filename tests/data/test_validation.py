"""VALIDATE with real Great Expectations on the real Taobao UserBehavior head (no mocks).

Each failing case starts from a slice of the real table and breaks one thing, then checks that the report
and its message name the expectation, the column, the count and the source."""

from __future__ import annotations

import os

os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pcsv  # noqa: E402
import pytest  # noqa: E402

from components.data.datasets import behaviors_for  # noqa: E402
from components.data.schema import behavior_array  # noqa: E402
from components.data.validation import (  # noqa: E402
    DataValidationError,
    ValidationConfig,
    ValidationReport,
    validate_interactions,
    window_bounds,
)

SOURCE = "UserBehavior.csv"
NAMES = tuple(behaviors_for("taobao"))
WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00")
NOW = 1_600_000_000  # fixed "now" (2020-09) so results do not depend on the clock
NO_PROFILES = pa.table({"user_id": pa.array([], pa.int64())})


@pytest.fixture(scope="module")
def taobao(taobao_head: Path) -> pa.Table:
    """Canonical interactions table of the real 84k-row head (its truncated last line is skipped)."""
    path = taobao_head
    raw = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=["user_id", "item_id", "category_id", "behavior", "timestamp"]),
        parse_options=pcsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
    )
    names = pc.replace_substring_regex(raw["behavior"], "^pv$", "click")
    codes = pc.index_in(names, value_set=pa.array(NAMES)).combine_chunks()
    assert codes.null_count == 0, "unexpected raw behavior code in the Taobao head"
    return pa.table(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "behavior": behavior_array(codes, NAMES),
            "timestamp": raw["timestamp"],
            "category_id": raw["category_id"],
        }
    )


@pytest.fixture(scope="module")
def small(taobao: pa.Table) -> pa.Table:
    return taobao.slice(0, 5000)


def _cfg(**kw) -> ValidationConfig:
    base = dict(behaviors=list(NAMES), time_window=WINDOW, time_window_mostly=0.99, now=NOW)
    base.update(kw)
    return ValidationConfig(**base)


def _result(report: ValidationReport, check: str) -> dict:
    (found,) = [r for r in report.results if r["check"] == check]
    return found


def _outside_window(table: pa.Table) -> int:
    lo, hi = window_bounds(WINDOW)
    ts = table["timestamp"]
    return pc.sum(pc.or_(pc.less(ts, lo), pc.greater(ts, hi))).as_py() or 0


def _set_rows(column: pa.ChunkedArray, rows: list[int], value) -> pa.Array:
    mask = pc.is_in(pa.array(range(len(column))), value_set=pa.array(rows))
    return pc.if_else(mask, pa.scalar(value, type=column.type), column)


# ------------------------------------------------------------------------------------------------- passing


def test_real_taobao_head_passes_with_35_rows_outside_the_window(taobao: pa.Table) -> None:
    report = validate_interactions(taobao, NO_PROFILES, _cfg(), source=SOURCE)
    assert report.success, report.failure_message()
    report.raise_for_failure()  # must not raise
    window = _result(report, "timestamp_in_window")
    assert window["unexpected_count"] == _outside_window(taobao) == 35
    assert window["success"] and window["element_count"] == taobao.num_rows
    assert window["partial_unexpected"] and all(isinstance(v, int) for v in window["partial_unexpected"])
    users = _result(report, "min_users")
    assert users["observed_value"] == pc.count_distinct(taobao["user_id"]).as_py()
    assert {r["check"] for r in report.results} >= {
        "not_null:user_id", "not_null:item_id", "not_null:behavior", "not_null:timestamp",
        "behavior_in_set", "timestamp_in_window", "timestamp_not_future", "min_users",
    }
    assert not any(r["table"] == "profiles" for r in report.results)  # zero-row profiles are skipped
    assert report.failure_message() == ""


def test_reports_render_json_markdown_and_html(small: pa.Table) -> None:
    bad = small.set_column(1, "item_id", _set_rows(small["item_id"], [3, 4], None))
    report = validate_interactions(bad, NO_PROFILES, _cfg(), source=SOURCE)
    doc = report.to_json()
    text = json.dumps(doc)
    assert json.loads(text)["great_expectations_version"] == doc["great_expectations_version"] != ""
    assert doc["run_time"] and doc["success"] is False and len(doc["results"]) == len(report.results)
    markdown, page = report.to_markdown(), report.to_html()
    for r in report.results:
        assert r["expectation"] in markdown and r["expectation"] in page
    assert "FAIL" in markdown and "| rows checked |" in markdown
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert "<script" not in page and "<link" not in page  # self-contained


# ------------------------------------------------------------------------------------------------- chunking


def test_chunked_counts_equal_whole_table(taobao: pa.Table) -> None:
    """Faults spread over several 1,000-row chunks; the first chunk alone is 10% outside the window (it
    would fail mostly=0.99 on its own), the table as a whole only 0.5%: aggregation must pass it."""
    part = taobao.slice(0, 20_000)
    lo, _ = window_bounds(WINDOW)
    ts = _set_rows(part["timestamp"], list(range(100)), lo - 3600)
    ts = _set_rows(ts, [2500, 7777, 15_001], NOW + 10)
    items = _set_rows(part["item_id"], [999, 1000, 12_345], None)
    part = part.set_column(part.column_names.index("timestamp"), "timestamp", ts)
    part = part.set_column(1, "item_id", items)
    outside = _outside_window(part)
    assert outside / part.num_rows < 0.01

    whole = validate_interactions(part, NO_PROFILES, _cfg(chunk_rows=1_000_000), source=SOURCE)
    chunked = validate_interactions(part, NO_PROFILES, _cfg(chunk_rows=1000), source=SOURCE)
    assert whole.chunks == 1 and chunked.chunks == 20
    keys = ("check", "success", "element_count", "missing_count", "unexpected_count", "observed_value")
    assert [{k: r[k] for k in keys} for r in chunked.results] == [{k: r[k] for k in keys} for r in whole.results]
    assert _result(chunked, "timestamp_in_window")["unexpected_count"] == outside
    assert _result(chunked, "timestamp_in_window")["success"]
    assert _result(chunked, "timestamp_not_future")["unexpected_count"] == 3
    assert _result(chunked, "not_null:item_id")["unexpected_count"] == 3
    assert not chunked.success and chunked.failure_message() == whole.failure_message()


# ------------------------------------------------------------------------------------------------- failures


def _assert_failure(report: ValidationReport, check: str, expectation: str, column: str, count: int) -> str:
    assert not report.success
    result = _result(report, check)
    assert not result["success"] and result["expectation"] == expectation and result["column"] == column
    message = report.failure_message()
    line = next(line for line in message.splitlines() if f"{expectation} on column '{column}'" in line)
    assert line.startswith(f"validation of {SOURCE} failed: ")
    assert f"{count:,} of" in line or f"observed {count:,}" in line
    with pytest.raises(DataValidationError) as err:
        report.raise_for_failure()
    assert line in str(err.value)
    return line


def test_unknown_behavior_fails(small: pa.Table) -> None:
    names = (*NAMES, "like")
    codes = small["behavior"].combine_chunks().indices
    rows = [10, 20, 30, 4000]
    codes = _set_rows(pa.chunked_array([codes]), rows, len(NAMES)).cast(pa.int8())
    bad = small.set_column(2, "behavior", behavior_array(codes.combine_chunks(), names))
    report = validate_interactions(bad, NO_PROFILES, _cfg(), source=SOURCE)
    line = _assert_failure(report, "behavior_in_set", "expect_column_values_to_be_in_set", "behavior", len(rows))
    assert f"4 of {small.num_rows:,} rows unexpected" in line and "'like'" in line


def test_null_ids_fail(small: pa.Table) -> None:
    bad = small.set_column(0, "user_id", _set_rows(small["user_id"], [0, 1, 2, 4999], None))
    bad = bad.set_column(1, "item_id", _set_rows(bad["item_id"], [7], None))
    report = validate_interactions(bad, NO_PROFILES, _cfg(), source=SOURCE)
    _assert_failure(report, "not_null:user_id", "expect_column_values_to_not_be_null", "user_id", 4)
    _assert_failure(report, "not_null:item_id", "expect_column_values_to_not_be_null", "item_id", 1)
    assert _result(report, "not_null:behavior")["success"]


def test_future_timestamps_fail(small: pa.Table) -> None:
    rows = [5, 6, 7, 8, 9, 10]
    bad = small.set_column(3, "timestamp", _set_rows(small["timestamp"], rows, NOW + 1))
    report = validate_interactions(bad, NO_PROFILES, _cfg(time_window=None), source=SOURCE)
    line = _assert_failure(
        report, "timestamp_not_future", "expect_column_values_to_be_between", "timestamp", len(rows)
    )
    assert str(NOW + 1) in line and f"timestamp <= {NOW}" in line
    # strict: one future row in the whole table is already too many
    one = small.set_column(3, "timestamp", _set_rows(small["timestamp"], [0], NOW + 1))
    assert not validate_interactions(one, NO_PROFILES, _cfg(time_window=None), source=SOURCE).success


def test_most_timestamps_outside_window_fail(small: pa.Table) -> None:
    window = ("2017-12-02", "2017-12-03")  # dates: the upper bound covers the whole last day (UTC)
    lo, hi = window_bounds(window)
    assert hi - lo == 2 * 86400 - 1
    ts = small["timestamp"]
    outside = pc.sum(pc.or_(pc.less(ts, lo), pc.greater(ts, hi))).as_py()
    assert outside > 0.5 * small.num_rows  # precondition on the real data
    report = validate_interactions(small, NO_PROFILES, _cfg(time_window=window), source=SOURCE)
    line = _assert_failure(report, "timestamp_in_window", "expect_column_values_to_be_between", "timestamp", outside)
    assert "more than the 1.00% allowed" in line
    assert _result(report, "timestamp_not_future")["success"]


def test_too_few_users_fail(small: pa.Table) -> None:
    users = pc.count_distinct(small["user_id"]).as_py()
    report = validate_interactions(small, NO_PROFILES, _cfg(min_users=users + 1), source=SOURCE)
    line = _assert_failure(
        report, "min_users", "expect_column_unique_value_count_to_be_between", "user_id", users
    )
    assert f"at least {users + 1:,}" in line
    assert validate_interactions(small, NO_PROFILES, _cfg(min_users=users), source=SOURCE).success


def test_profile_value_out_of_domain_and_duplicate_users_fail(small: pa.Table) -> None:
    users = pc.unique(small["user_id"])
    n = len(users)
    cycle = ["M", "F", None, "X"]  # null = unknown, allowed
    gender = pa.array([cycle[i % 4] for i in range(n)], pa.string())
    profiles = pa.table({"user_id": users, "gender": gender, "age": pa.array(["18-24"] * n, pa.string())})
    domains = {"gender": ["M", "F"], "age": ["18-24", "25-34"]}
    report = validate_interactions(small, profiles, _cfg(profile_domains=domains), source=SOURCE)
    n_x = sum(1 for i in range(n) if i % 4 == 3)
    line = _assert_failure(report, "profile_domain:gender", "expect_column_values_to_be_in_set", "gender", n_x)
    assert "of profiles" in line and "'X'" in line
    assert _result(report, "profile_domain:gender")["missing_count"] == sum(1 for i in range(n) if i % 4 == 2)
    assert _result(report, "profile_domain:age")["success"]
    assert _result(report, "profile_user_unique")["success"]
    # all interaction checks still pass: only the profile line is reported
    assert len(report.failure_message().splitlines()) == 1

    doubled = pa.concat_tables([profiles, profiles.slice(0, 2)])
    report = validate_interactions(small, doubled, _cfg(profile_domains={}), source=SOURCE)
    _assert_failure(report, "profile_user_unique", "expect_column_values_to_be_unique", "user_id", 4)


def test_missing_columns_raise_with_names(small: pa.Table) -> None:
    with pytest.raises(DataValidationError, match=r"UserBehavior\.csv.*timestamp"):
        validate_interactions(small.drop_columns(["timestamp"]), NO_PROFILES, _cfg(), source=SOURCE)
    profiles = pa.table({"user_id": pa.array([1], pa.int64())})
    with pytest.raises(DataValidationError, match=r"UserBehavior\.csv.*gender"):
        validate_interactions(small, profiles, _cfg(profile_domains={"gender": ["M"]}), source=SOURCE)
    with pytest.raises(ValueError, match="time_window_mostly"):
        _cfg(time_window_mostly=1.5)
