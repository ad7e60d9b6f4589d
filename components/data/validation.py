"""VALIDATE: Great Expectations (1.x, used directly) suites for the canonical interactions and profiles tables.

Why GE directly: ZenML's GE integration pins GE < 1, so this module builds an ephemeral GE context, a pandas
data source with one dataframe asset per table, a whole-dataframe batch definition, an ``ExpectationSuite``
and a ``ValidationDefinition``, and runs it.  Nothing here imports ZenML; the VALIDATE step wraps
:func:`validate_interactions` and fails with :meth:`ValidationReport.raise_for_failure`.

Why chunks: an interactions table can hold 100M rows, far too many for one pandas frame.  The row-level suite
runs on slices of ``chunk_rows`` rows (converted to pandas one at a time) and every expectation's
element / missing / unexpected counts are summed over the slices.  Success, including each ``mostly``
threshold, is then decided here from the summed counts with the same rule GE uses
(``(considered - unexpected) / considered >= mostly``, where ``considered`` excludes nulls except for the
not-null expectations), so the verdict equals the one for the whole table at once.  Table-level statistics
that cannot be summed (distinct users) run once on a small derived frame instead.

Expectations:

* interactions (per chunk): ``user_id``, ``item_id``, ``behavior``, ``timestamp`` not null; ``behavior`` in
  the configured set; ``timestamp`` inside the configured window (``mostly=time_window_mostly``: CLEAN drops
  the stragglers); ``timestamp`` not after ``now`` (strict).
* interactions, derived frame of distinct non-null user ids: at least ``min_users`` of them.
* profiles (only if it has rows): ``user_id`` not null and unique; each configured field within its domain
  (nulls mean "unknown" and are allowed).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from components.data.schema import BEHAVIOR, REQUIRED_COLUMNS, TIMESTAMP, USER, check_canonical

# GE logs a DEBUG line for every metric function it registers at import time; keep that out of our logs
# unless someone configured the GE logger on purpose.
_gx_logger = logging.getLogger("great_expectations")
if _gx_logger.level == logging.NOTSET:
    _gx_logger.setLevel(logging.WARNING)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx

from components.data.timewindow import window_bounds  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

logger = logging.getLogger(__name__)

#: Key in each expectation's ``meta`` that ties GE's result back to our check (two checks may share a type
#: and column, e.g. the window and the not-in-the-future bounds on ``timestamp``).
_CHECK_KEY = "mbprompt_check"
#: How many distinct example values a result keeps.
_N_EXAMPLES = 5


class DataValidationError(ValueError):
    """The data broke the expectation suite (or lacks the columns it needs); the message says where."""


@dataclass
class ValidationConfig:
    """What the data must look like.  Bounds of ``time_window`` are inclusive ISO dates or datetimes; a naive
    value is read as UTC, and a date-only upper bound covers that whole day."""

    behaviors: list[str]
    time_window: tuple[str, str] | None = None
    time_window_mostly: float = 0.99
    now: int | None = None
    min_users: int = 1
    profile_domains: dict[str, list[str]] = field(default_factory=dict)
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.behaviors:
            raise ValueError("ValidationConfig.behaviors must name at least one behavior")
        if not 0.0 <= self.time_window_mostly <= 1.0:
            raise ValueError(f"ValidationConfig.time_window_mostly must be in [0, 1], got {self.time_window_mostly}")
        if self.chunk_rows < 1:
            raise ValueError(f"ValidationConfig.chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.min_users < 0:
            raise ValueError(f"ValidationConfig.min_users must be >= 0, got {self.min_users}")
        if self.time_window is not None:
            lo, hi = window_bounds(self.time_window)
            if lo > hi:
                raise ValueError(f"ValidationConfig.time_window starts after it ends: {self.time_window}")


@dataclass
class ValidationReport:
    """Outcome of one validation: one result per expectation (chunk counts already summed)."""

    success: bool
    source: str
    results: list[dict]
    ge_version: str = field(default_factory=lambda: gx.__version__)
    run_time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    duration_s: float = 0.0
    rows: int = 0
    chunks: int = 0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    def to_json(self) -> dict:
        """Plain JSON-able dict (saved as the VALIDATE step's artifact)."""
        return json.loads(
            json.dumps(
                {
                    "success": self.success,
                    "source": self.source,
                    "great_expectations_version": self.ge_version,
                    "run_time": self.run_time,
                    "duration_s": round(self.duration_s, 3),
                    "rows": self.rows,
                    "chunks": self.chunks,
                    "results": self.results,
                },
                default=_jsonable,
            )
        )

    @classmethod
    def from_json(cls, d: dict) -> "ValidationReport":
        """Inverse of ``to_json`` (used by the ZenML materializer to load the artifact back)."""
        return cls(success=d["success"], source=d["source"], results=d["results"],
                   ge_version=d.get("great_expectations_version", ""), run_time=d.get("run_time", ""),
                   duration_s=d.get("duration_s", 0.0), rows=d.get("rows", 0), chunks=d.get("chunks", 0))

    def _rows(self) -> list[tuple[str, str, str, str, str, str, str]]:
        out = []
        for r in self.results:
            checked = "" if r["element_count"] is None else f"{r['element_count']:,}"
            if r["unexpected_count"] is not None:
                unexpected = f"{r['unexpected_count']:,}"
                if r["unexpected_percent"]:
                    unexpected += f" ({r['unexpected_percent']:.3g}%)"
            else:
                unexpected = "-"
            verdict = "pass" if r["success"] else "FAIL"
            out.append((r["table"], r["expectation"], r["column"], checked, unexpected, verdict, _details(r)))
        return out

    def to_markdown(self) -> str:
        """Readable summary table (ZenML dashboard, logs, READMEs)."""
        head = (
            f"**Validation of {self.source}: {'passed' if self.success else 'FAILED'}** "
            f"({self.rows:,} interaction rows in {self.chunks} chunk(s), Great Expectations {self.ge_version}, "
            f"{self.run_time})\n\n"
        )
        lines = [
            "| table | expectation | column | rows checked | unexpected | result | details |",
            "|---|---|---|---:|---:|---|---|",
        ]
        for row in self._rows():
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return head + "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """Self-contained HTML page with the same table (no external CSS or scripts)."""
        cells = []
        for row in self._rows():
            cls = "pass" if row[5] == "pass" else "fail"
            cells.append(
                f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            )
        status = "passed" if self.success else "FAILED"
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>Validation of {html.escape(self.source)}</title>"
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}th{background:#eee}"
            "tr.fail td{background:#fde2e2}tr.pass td{background:#e6f4ea}</style></head><body>"
            f"<h2>Validation of {html.escape(self.source)}: {status}</h2>"
            f"<p>{self.rows:,} interaction rows in {self.chunks} chunk(s); Great Expectations "
            f"{html.escape(self.ge_version)}; run at {html.escape(self.run_time)}.</p>"
            "<table><tr><th>table</th><th>expectation</th><th>column</th><th>rows checked</th>"
            "<th>unexpected</th><th>result</th><th>details</th></tr>"
            + "".join(cells)
            + "</table></body></html>\n"
        )

    def failure_message(self) -> str:
        """One line per failed expectation naming the expectation, column, counts and source."""
        return "\n".join(f"validation of {self.source} failed: {_describe_failure(r)}" for r in self.failed)

    def raise_for_failure(self) -> None:
        if not self.success:
            raise DataValidationError(self.failure_message())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _fmt_value(value: Any) -> str:
    return repr(value)


def _details(r: dict) -> str:
    parts = []
    kw = r["kwargs"]
    if "value_set" in kw:
        parts.append("set " + ", ".join(map(str, kw["value_set"])))
    if kw.get("min_value") is not None:
        parts.append(f"min {_plain(kw['min_value'])}")
    if kw.get("max_value") is not None:
        parts.append(f"max {_plain(kw['max_value'])}")
    if r.get("mostly", 1.0) < 1.0:
        parts.append(f"mostly {r['mostly']}")
    if r.get("observed_value") is not None:
        parts.append(f"observed {r['observed_value']}")
    if r.get("partial_unexpected"):
        parts.append("e.g. " + ", ".join(_fmt_value(v) for v in r["partial_unexpected"]))
    if r.get("exception"):
        parts.append("error: " + r["exception"])
    return "; ".join(parts)


def _describe_failure(r: dict) -> str:
    where = f"{r['expectation']} on column '{r['column']}'"
    if r["table"] == "profiles":
        where += " of profiles"
    if r.get("exception"):
        return f"{where}: could not be evaluated: {r['exception']}"
    if r["unexpected_count"] is None:  # aggregate expectation (distinct users)
        kw = r["kwargs"]
        bounds = []
        if kw.get("min_value") is not None:
            bounds.append(f"at least {_plain(kw['min_value']):,}")
        if kw.get("max_value") is not None:
            bounds.append(f"at most {_plain(kw['max_value']):,}")
        observed = r.get("observed_value")
        observed_text = f"{observed:,}" if isinstance(observed, int) else str(observed)
        what = " distinct values" if r["expectation"] == "expect_column_unique_value_count_to_be_between" else ""
        return f"{where}: observed {observed_text}{what}, expected {' and '.join(bounds) or 'within bounds'}"
    considered = r["element_count"] - (r.get("missing_count") or 0)
    text = f"{where}: {r['unexpected_count']:,} of {considered:,} rows unexpected"
    kw = r["kwargs"]
    if r["expectation"] == "expect_column_values_to_be_between":
        text += f" (expected {_range_text(r['column'], kw.get('min_value'), kw.get('max_value'))})"
    if r.get("mostly", 1.0) < 1.0:
        text += f" ({r['unexpected_percent']:.2f}%, more than the {100 * (1 - r['mostly']):.2f}% allowed)"
    if r.get("partial_unexpected"):
        text += " (e.g. " + ", ".join(_fmt_value(v) for v in r["partial_unexpected"]) + ")"
    return text


def _range_text(column: str, lo: Any, hi: Any) -> str:
    """``lo <= column <= hi``; Unix-second bounds of the timestamp column also in readable UTC."""
    def show(v: Any) -> str:
        v = _plain(v)
        if column == TIMESTAMP and isinstance(v, int):
            return f"{v} [{datetime.fromtimestamp(v, timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}]"
        return str(v)

    return ("" if lo is None else f"{show(lo)} <= ") + column + ("" if hi is None else f" <= {show(hi)}")


# --------------------------------------------------------------------------------------------------------------
# GE plumbing


def _new_context() -> Any:
    """Ephemeral in-memory GE context without progress bars or analytics."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _definition(context: Any, datasource: Any, name: str, expectations: list[tuple[str, Any]]) -> Any:
    """Dataframe asset + whole-dataframe batch definition + suite + validation definition for one frame kind."""
    asset = datasource.add_dataframe_asset(name=name)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{name}_frame")
    suite = gx.ExpectationSuite(name=f"mbprompt_{name}")
    for check, expectation in expectations:
        expectation.meta = {**(expectation.meta or {}), _CHECK_KEY: check}
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate_{name}", data=batch_definition, suite=suite)
    )


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """JSON-friendly example value: numpy -> Python, integral floats (ints widened by nulls) -> int."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class _Tally:
    """Sums one expectation's per-chunk GE results."""

    def __init__(self, table: str, check: str, expectation_type: str, column: str, kwargs: dict, mostly: float):
        self.table, self.check, self.type, self.column = table, check, expectation_type, column
        self.kwargs, self.mostly = kwargs, mostly
        self.element_count = 0
        self.missing_count = 0
        self.unexpected_count: int | None = None
        self.observed_value: Any = None
        self.examples: list[Any] = []
        self.exception: str | None = None
        self.ge_success = True

    def add(self, er: Any, rows: int) -> None:
        info = er.exception_info or {}
        infos = [info] if "raised_exception" in info else list(info.values())
        for item in infos:
            if isinstance(item, dict) and item.get("raised_exception"):
                self.exception = str(item.get("exception_message") or "unknown error")
        self.ge_success = self.ge_success and bool(er.success)
        res = er.result or {}
        if "observed_value" in res:
            self.observed_value = _plain(res["observed_value"])
        if "unexpected_count" not in res:  # aggregate expectation: it looked at the whole (derived) frame
            self.element_count += rows
        if "unexpected_count" in res:
            self.element_count += int(res.get("element_count") or 0)
            self.missing_count += int(res.get("missing_count") or 0)
            self.unexpected_count = (self.unexpected_count or 0) + int(res["unexpected_count"] or 0)
            for value in res.get("partial_unexpected_list") or []:
                if len(self.examples) >= _N_EXAMPLES:
                    break
                if _is_null(value):
                    continue
                value = _plain(value)
                if value not in self.examples:
                    self.examples.append(value)

    def result(self) -> dict:
        considered = self.element_count - self.missing_count
        if self.exception is not None:
            success = False
        elif self.unexpected_count is None:  # aggregate expectation: GE's own verdict (one run, not chunked)
            success = self.ge_success
        elif considered == 0 or self.unexpected_count == 0:
            success = True
        else:  # same rule as GE's _mostly_success, applied to the summed counts
            success = (considered - self.unexpected_count) / considered >= self.mostly
        percent = None
        if self.unexpected_count is not None:
            percent = 100.0 * self.unexpected_count / considered if considered else 0.0
        return {
            "table": self.table,
            "check": self.check,
            "expectation": self.type,
            "column": self.column,
            "kwargs": self.kwargs,
            "mostly": self.mostly,
            "success": bool(success),
            "element_count": self.element_count,
            "missing_count": self.missing_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": percent,
            "partial_unexpected": self.examples,
            "observed_value": self.observed_value,
            "exception": self.exception,
        }


def _run(definition: Any, frame: Any, tallies: dict[str, _Tally], table: str) -> None:
    """Run one validation definition on one pandas frame and add its results to ``tallies`` (by check id)."""
    outcome = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    for er in outcome.results:
        cfg = er.expectation_config
        check = (cfg.meta or {}).get(_CHECK_KEY, f"{cfg.type}:{cfg.kwargs.get('column')}")
        if check not in tallies:
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            tallies[check] = _Tally(
                table, check, cfg.type, str(cfg.kwargs.get("column")), kwargs, float(kwargs.get("mostly", 1.0))
            )
        tallies[check].add(er, len(frame))


# --------------------------------------------------------------------------------------------------------------
# entry point


def _interaction_expectations(cfg: ValidationConfig, now: int) -> list[tuple[str, Any]]:
    exps: list[tuple[str, Any]] = [
        (f"not_null:{col}", gxe.ExpectColumnValuesToNotBeNull(column=col)) for col in REQUIRED_COLUMNS
    ]
    exps.append(("behavior_in_set", gxe.ExpectColumnValuesToBeInSet(column=BEHAVIOR, value_set=list(cfg.behaviors))))
    if cfg.time_window is not None:
        lo, hi = window_bounds(cfg.time_window)
        exps.append(
            (
                "timestamp_in_window",
                gxe.ExpectColumnValuesToBeBetween(
                    column=TIMESTAMP, min_value=lo, max_value=hi, mostly=cfg.time_window_mostly
                ),
            )
        )
    exps.append(("timestamp_not_future", gxe.ExpectColumnValuesToBeBetween(column=TIMESTAMP, max_value=now)))
    return exps


def _check_profiles(profiles: pa.Table, cfg: ValidationConfig, source: str) -> None:
    missing = [c for c in [USER, *cfg.profile_domains] if c not in profiles.column_names]
    if missing:
        raise DataValidationError(
            f"validation of {source} failed: profiles lack column(s) {missing} named by the validation config; "
            f"have {profiles.column_names}"
        )


def validate_interactions(
    interactions: pa.Table, profiles: pa.Table | None, cfg: ValidationConfig, *, source: str
) -> ValidationReport:
    """Run the expectation suites on the canonical tables and return the report (it does not raise on failed
    expectations: call :meth:`ValidationReport.raise_for_failure`).  Missing canonical columns raise
    :class:`DataValidationError` straight away, because no expectation could be evaluated without them."""
    started = time.perf_counter()
    try:
        check_canonical(interactions, where=f"validation of {source}")
    except ValueError as err:
        raise DataValidationError(str(err)) from err
    has_profiles = profiles is not None and profiles.num_rows > 0
    if has_profiles:
        _check_profiles(profiles, cfg, source)
    now = int(time.time()) if cfg.now is None else int(cfg.now)

    context = _new_context()
    datasource = context.data_sources.add_pandas(name="mbprompt")
    row_exps = _interaction_expectations(cfg, now)
    suite_order = [check for check, _ in row_exps] + ["min_users"]
    rows_def = _definition(context, datasource, "interactions", row_exps)
    users_def = _definition(
        context,
        datasource,
        "users",
        [("min_users", gxe.ExpectColumnUniqueValueCountToBeBetween(column=USER, min_value=cfg.min_users))],
    )

    tallies: dict[str, _Tally] = {}
    n = interactions.num_rows
    starts = list(range(0, max(n, 1), cfg.chunk_rows))  # an empty table still gets one (empty) run
    columns = list(REQUIRED_COLUMNS)
    for start in tqdm(starts, desc=f"validate {source}", unit="chunk", disable=len(starts) < 2, leave=False):
        piece = interactions.slice(start, cfg.chunk_rows).select(columns)
        piece = piece.set_column(
            columns.index(BEHAVIOR), BEHAVIOR, pc.cast(piece.column(BEHAVIOR), pa.string())
        )
        frame = piece.to_pandas()
        del piece
        _run(rows_def, frame, tallies, "interactions")
        del frame

    # Distinct users cannot be summed over chunks: count them once on a one-column frame of distinct ids.
    distinct_users = pc.drop_null(pc.unique(interactions.column(USER)))
    users_frame = pa.table({USER: distinct_users}).to_pandas()
    _run(users_def, users_frame, tallies, "interactions")

    if has_profiles:
        prof_exps: list[tuple[str, Any]] = [
            ("profile_user_not_null", gxe.ExpectColumnValuesToNotBeNull(column=USER)),
            ("profile_user_unique", gxe.ExpectColumnValuesToBeUnique(column=USER)),
        ]
        for name, domain in cfg.profile_domains.items():
            prof_exps.append(
                (f"profile_domain:{name}", gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(domain)))
            )
        suite_order += [check for check, _ in prof_exps]
        prof_def = _definition(context, datasource, "profiles", prof_exps)
        prof_frame = profiles.select([USER, *cfg.profile_domains]).to_pandas()
        _run(prof_def, prof_frame, tallies, "profiles")

    # GE groups results by column; report them in suite order instead (interactions, users, profiles).
    order = {check: i for i, check in enumerate(suite_order)}
    results = [t.result() for t in sorted(tallies.values(), key=lambda t: order.get(t.check, len(order)))]
    report = ValidationReport(
        success=all(r["success"] for r in results),
        source=source,
        results=results,
        duration_s=time.perf_counter() - started,
        rows=n,
        chunks=len(starts),
    )
    if report.success:
        logger.info("validation of %s passed: %d expectations, %d rows, %.1f s", source, len(results), n,
                    report.duration_s)
    else:
        logger.warning("%s", report.failure_message())
    return report
