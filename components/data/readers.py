"""Readers: raw dataset files -> the canonical interactions and profiles tables (see ``schema.py``).

Why it is built this way:

* Raw logs are big (Taobao UserBehavior: 100M rows, 3.5 GB), so every CSV is read with pyarrow's *streaming*
  reader in record batches and each batch is converted at once to compact columns (int64 ids, int8 behavior codes,
  int64 seconds).  No string column of a numeric field outlives its batch, so memory is bounded by the output.
* Raw logs are also dirty (the public Taobao head ends in a truncated line).  A malformed row is counted per reason
  and column, the first five are reported with their 1-based physical line numbers, and the row is skipped, as long
  as malformed / total <= ``max_malformed_fraction``.  Past that the reader refuses the file with
  :class:`MalformedRowsError`, whose message names the file, the columns, the counts and the tolerance.
* The common case must stay fast: each batch is cast column by column with one vectorised cast; only when a cast
  fails does the slow path run, which finds the bad rows with vectorised regex / length checks (plus a bisection
  for the rare value that passes the regex but not the cast), never with a Python loop over rows.

Malformed reasons: ``too_few_fields`` / ``too_many_fields`` (pyarrow's invalid-row handler; the column named is the
first missing one, or ``(extra fields)``), ``missing_value`` (empty required field), ``not_an_integer``,
``not_a_number``, ``bad_timestamp`` (ISO or MMDD that is no valid date), ``unknown_behavior`` and ``unknown_code``
(a profile code outside the documented table).  Blank lines are skipped and counted apart (``blank_lines``), not
as malformed; a row whose fields are all empty is treated as blank.  ``malformed`` counts rows; the counts by
column and reason count cells, so a row bad in two columns appears under both.  Line numbers count physical
lines and assume no quoted field spans lines (true of every supported raw format).
"""

from __future__ import annotations

import csv
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from components.settings import from_dict
from components.data.schema import BEHAVIOR, BEHAVIORS, DATASETS, ITEM, TIMESTAMP, USER, check_canonical

logger = logging.getLogger(__name__)

#: 2019-07-05 00:00 at UTC+8: CIKM 2019 timestamps are seconds after this instant.
CIKM2019_BASE = 1_562_256_000
#: 2014-01-01 00:00 at UTC+8: IJCAI-15 MMDD stamps are days of 2014 in China Standard Time.
IJCAI15_YEAR_START = 1_388_505_600
_DAYS_IN_MONTH_2014 = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_MONTH_START_DAY = np.concatenate([[0], np.cumsum(_DAYS_IN_MONTH_2014)[:-1]])

IJCAI15_AGE_BANDS = {1: "<18", 2: "18-24", 3: "25-29", 4: "30-34", 5: "35-39", 6: "40-49", 7: ">=50", 8: ">=50"}
IJCAI15_GENDERS = {0: "female", 1: "male"}
OPTIONAL_ID_COLUMNS = ("category_id", "seller_id", "brand_id")
_FIRST_N = 5
_TEXT_LIMIT = 120


class IngestError(ValueError):
    """Base of every ingest failure; the message always names the file."""

    def __init__(self, message: str, *, path: str | Path | None = None, report: dict | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.report = report


class EmptyInputError(IngestError):
    """The file has no data rows (0 bytes, a header only, or blank lines only)."""


class MissingColumnError(IngestError):
    """A column the format (or the generic mapping) needs is absent from the file."""


class MalformedRowsError(IngestError):
    """More rows than ``max_malformed_fraction`` allows could not be parsed."""


@dataclass
class GenericMapping:
    """How to read a generic CSV / Parquet file: every field names a source column.

    For a CSV without header, columns are named ``f0``, ``f1``, ... (a bare number ``"2"`` means ``f2``).
    """

    user_id: str
    item_id: str
    timestamp: str
    behavior: str | None = None  # None -> every row gets the single behavior "interact"
    #: raw value (as text) -> canonical behavior name; the order of first appearance of the names is the
    #: vocabulary order.  Required when ``behavior`` is set, so that unknown codes are caught, not invented.
    behavior_values: dict[str, str] | None = None
    timestamp_unit: str = "s"  # "s" | "ms" | "iso" (ISO-8601 text, UTC unless it carries an offset)
    category_id: str | None = None
    seller_id: str | None = None
    brand_id: str | None = None
    delimiter: str = ","  # CSV only
    has_header: bool = True  # CSV only

    def __post_init__(self) -> None:
        if self.timestamp_unit not in ("s", "ms", "iso"):
            raise ValueError(f"GenericMapping.timestamp_unit must be 's', 'ms' or 'iso', got {self.timestamp_unit!r}")
        if self.behavior is not None and not self.behavior_values:
            raise ValueError(f"GenericMapping: behavior column {self.behavior!r} is set but behavior_values is "
                             "empty; give raw value -> canonical name for every allowed value")
        if self.behavior is None and self.behavior_values:
            raise ValueError("GenericMapping: behavior_values given but no behavior column")
        if self.behavior_values:
            self.behavior_values = {str(k): str(v) for k, v in self.behavior_values.items()}

    @classmethod
    def from_any(cls, mapping: "GenericMapping | dict | None") -> "GenericMapping":
        if isinstance(mapping, GenericMapping):
            return mapping
        if mapping is None:
            raise ValueError("dataset 'generic' needs a mapping (GenericMapping or dict with user_id, item_id, "
                             "timestamp, ...)")
        return from_dict(cls, mapping, where="GenericMapping")

    def vocabulary(self) -> tuple[str, ...]:
        if self.behavior is None:
            return ("interact",)
        return tuple(dict.fromkeys(self.behavior_values.values()))


@dataclass
class IngestResult:
    interactions: pa.Table  # canonical (schema.check_canonical passes)
    profiles: pa.Table  # user_id + nullable string fields; zero rows if the dataset has none
    report: dict  # JSON-able, see read_dataset


# ----------------------------------------------------------------------------------------------- column parsers
# A parser takes one batch column and returns (values, problems): values of the output type (anything at bad
# positions, which are filtered out later) and a list of (reason, numpy bool mask of bad rows).

Problems = list[tuple[str, np.ndarray]]
_UNKNOWN = object()  # decode lookups return this for a value outside the table
_INT_RE = r"^-?[0-9]{1,19}$"
_NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ISO_RE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?)?"
           r"(Z|[+-][0-9]{2}:?[0-9]{2})?$")
_OFFSET_RE = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _as_plain(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _missing(arr: pa.Array) -> np.ndarray:
    """Null or empty text."""
    if _is_text(arr.type):
        return _np(pc.fill_null(pc.equal(pc.binary_length(arr), 0), True))  # byte length: no UTF-8 decoding
    return _np(arr.is_null())


def _int_text_ok(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(ok, missing) masks of integer text: a cheap all-digits check on every row, then the regex (signs) and the
    empty test only on the few rows that failed it."""
    ok = _np(pc.fill_null(pc.ascii_is_decimal(arr), False))
    missing = np.zeros(len(arr), bool)
    rest = np.flatnonzero(~ok)
    if len(rest):
        sub = arr.take(pa.array(rest))
        sub_missing = _missing(sub)
        missing[rest] = sub_missing
        ok[rest] = _np(pc.fill_null(pc.match_substring_regex(sub, _INT_RE), False)) & ~sub_missing
    return ok, missing


def _bisect_failures(arr: pa.Array, cast: Callable[[pa.Array], pa.Array]) -> list[int]:
    """Indices where ``cast`` fails, by halving: O(k log n) vectorised calls for k failures (k is rare here)."""
    bad: list[int] = []
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            cast(arr.slice(lo, hi - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    return bad


def _cast_where(arr: pa.Array, ok: np.ndarray, cast: Callable[[pa.Array], pa.Array], fill: str
                ) -> tuple[pa.Array, np.ndarray]:
    """Cast the rows where ``ok`` (others replaced by ``fill``); rows that pass the regex but still fail the cast
    (overflow, month 13, ...) are found by bisection and cleared from ``ok``."""
    filled = pc.if_else(pa.array(ok), arr, pa.scalar(fill, arr.type))
    try:
        return cast(filled), ok
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = ok.copy()
        ok[_bisect_failures(filled, cast)] = False
        filled = pc.if_else(pa.array(ok), arr, pa.scalar(fill, arr.type))
        return cast(filled), ok


def _finish(values: pa.Array, missing: np.ndarray | None, required: bool, problems: Problems
            ) -> tuple[pa.Array, Problems]:
    if missing is not None and missing.any():
        if required:
            problems.insert(0, ("missing_value", missing))
        else:
            values = pc.if_else(pa.array(missing), pa.scalar(None, values.type), values)
    return values, problems


def parse_int(arr: pa.Array, *, required: bool = True, float_text: bool = False) -> tuple[pa.Array, Problems]:
    """Integer ids: int64.  ``float_text`` accepts ``7069.0`` (IJCAI-15 writes some ids as floats)."""
    arr = _as_plain(arr)
    t = arr.type
    if pa.types.is_integer(t):
        return _finish(arr.cast(pa.int64()), _missing(arr) if arr.null_count else None, required, [])
    if pa.types.is_floating(t):
        filled = pc.fill_null(arr, 0.0)
        ok = _np(pc.and_(pc.is_finite(filled), pc.equal(pc.floor(filled), filled)))
        missing = _missing(arr)
        values = pc.if_else(pa.array(ok), filled, 0.0).cast(pa.int64())
        return _finish(values, missing, required, [("not_an_integer", ~ok & ~missing)])
    if not _is_text(t):
        arr = arr.cast(pa.string())
    # Fast path: one vectorised cast.  Empty optional cells are filled first, because a failing cast costs time
    # with the number of bad cells (measured: ~0.3 s for a 500k-row batch of half-empty cells), so it must fail
    # only on the rare malformed row.
    missing = _missing(arr) if (float_text or not required) else None
    src = arr if missing is None or not missing.any() else pc.if_else(pa.array(missing), pa.scalar("0"), arr)
    try:
        if float_text:  # "7069.0" and "7069" alike; exact below 2**53, far above any id here
            f = pc.cast(src, pa.float64())
            if pc.all(pc.and_(pc.equal(pc.floor(f), f), pc.less(pc.abs(f), 2.0**53))).as_py() is not False:
                return _finish(f.cast(pa.int64()), missing, required, [])
        else:
            values = pc.cast(src, pa.int64())
            if missing is None and values.null_count:
                missing = _missing(arr)
            return _finish(values, missing, required, [])
    except pa.ArrowInvalid:
        pass
    if float_text:
        arr = pc.replace_substring_regex(arr, r"\.0*$", "")
    ok, missing = _int_text_ok(arr)
    values, ok = _cast_where(arr, ok, lambda a: pc.cast(a, pa.int64()), "0")
    return _finish(values, missing, required, [("not_an_integer", ~ok & ~missing)])


def parse_id_auto(arr: pa.Array, *, required: bool = True) -> tuple[pa.Array, Problems]:
    """Generic ids: int64 when every present value is a canonical integer (so casting back to text is lossless),
    else the text itself.  Batches may disagree; :func:`_column` then turns every chunk into text."""
    arr = _as_plain(arr)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return parse_int(arr, required=required)
    if not _is_text(arr.type):
        arr = arr.cast(pa.string())
    missing = _missing(arr)
    canonical = _np(pc.fill_null(pc.match_substring_regex(arr, r"^(0|-?[1-9][0-9]{0,17})$"), False))
    if (canonical | missing).all():
        values = pc.cast(pc.if_else(pa.array(missing), pa.scalar("0"), arr), pa.int64())
    else:
        values = arr.cast(pa.string())
    return _finish(values, missing, required, [])


def parse_text(arr: pa.Array, *, required: bool = False, strip_float_zero: bool = False
               ) -> tuple[pa.Array, Problems]:
    """Text ids / profile fields; empty -> null (or ``missing_value`` when required).  ``strip_float_zero``
    turns ``25.0`` into ``25`` so that float-typed exports and integer exports give the same labels."""
    arr = _as_plain(arr)
    arr = arr.cast(pa.string())
    if strip_float_zero:
        arr = pc.replace_substring_regex(arr, r"^(-?[0-9]+)\.0*$", r"\1")
    return _finish(arr, _missing(arr), required, [])


def parse_decode(arr: pa.Array, lookup: Callable[[str], Any], out_type: pa.DataType, *, required: bool,
                 unknown_reason: str) -> tuple[pa.Array, Problems]:
    """Map a small set of raw codes through ``lookup`` (called once per distinct value of the batch, never per
    row).  ``lookup`` returns the output value, None for a documented 'unknown' (null), or ``_UNKNOWN``."""
    if not pa.types.is_dictionary(arr.type):
        if not _is_text(arr.type):
            arr = arr.cast(pa.string())
        arr = pc.dictionary_encode(arr)
    raw = arr.dictionary.to_pylist()
    out_vals: list[Any] = []
    status: list[int] = []  # 0 ok, 1 missing, 2 unknown
    placeholder = 0 if pa.types.is_integer(out_type) else None
    for v in raw:
        if v is None or v == "":
            out_vals.append(placeholder if required else None)
            status.append(1 if required else 0)
            continue
        got = lookup(v)
        if got is _UNKNOWN:
            out_vals.append(placeholder)
            status.append(2)
        else:
            out_vals.append(got)
            status.append(0)
    values = pa.array(out_vals, out_type).take(arr.indices)
    problems: Problems = []
    if any(status) or (arr.null_count and required):
        codes = pa.array(status, pa.int8()).take(arr.indices)
        if codes.null_count:  # null cells (Parquet): missing
            codes = pc.fill_null(codes, 1 if required else 0)
        codes = codes.to_numpy(zero_copy_only=False)
        if (codes == 1).any():
            problems.append(("missing_value", codes == 1))
        if (codes == 2).any():
            problems.append((unknown_reason, codes == 2))
    return values, problems


def parse_seconds(arr: pa.Array, *, divisor: int = 1, offset: int = 0, fractional: bool = False,
                  required: bool = True) -> tuple[pa.Array, Problems]:
    """Numeric time -> int64 Unix seconds: ``floor(value / divisor) + offset``.  Integer text is the fast path;
    ``fractional`` also accepts decimals (RecBole writes ``timestamp:float``)."""
    arr = _as_plain(arr)
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return parse_temporal(arr, required=required)
    reason = "not_a_number" if fractional else "not_an_integer"

    def from_float(f: pa.Array) -> pa.Array:
        f = pc.floor(pc.divide(f, float(divisor)) if divisor != 1 else f)
        return pc.add(f.cast(pa.int64()), offset) if offset else f.cast(pa.int64())

    def from_int(i: pa.Array) -> pa.Array:
        if divisor != 1:  # floor division (exact: |ms| < 2**53)
            i = pc.floor(pc.divide(i.cast(pa.float64()), float(divisor))).cast(pa.int64())
        return pc.add(i, offset) if offset else i

    if pa.types.is_integer(t):
        return _finish(from_int(arr.cast(pa.int64())), _missing(arr) if arr.null_count else None, required, [])
    if pa.types.is_floating(t):
        filled = pc.fill_null(arr, 0.0)
        ok = _np(pc.is_finite(filled))
        missing = _missing(arr)
        values = from_float(pc.if_else(pa.array(ok), filled, 0.0))
        return _finish(values, missing, required, [(reason, ~ok & ~missing)])
    if not _is_text(t):
        arr = arr.cast(pa.string())
    # Fast path: one cast (float64 for decimals: exact for any Unix time in seconds or milliseconds).
    try:
        if fractional:
            f = pc.cast(arr, pa.float64())
            missing = _missing(arr) if f.null_count else None
            finite = _np(pc.fill_null(pc.is_finite(f), True))
            problems: Problems = [(reason, ~finite)] if not finite.all() else []
            return _finish(from_float(pc.if_else(pa.array(finite), f, 0.0)), missing, required, problems)
        ints = pc.cast(arr, pa.int64())
        return _finish(from_int(ints), _missing(arr) if ints.null_count else None, required, [])
    except pa.ArrowInvalid:
        pass
    if fractional:
        missing = _missing(arr)
        ok = _np(pc.fill_null(pc.match_substring_regex(arr, _NUMBER_RE), False)) & ~missing
        f, ok = _cast_where(arr, ok, lambda a: pc.cast(a, pa.float64()), "0")
        ok &= _np(pc.is_finite(f))
        values = from_float(pc.if_else(pa.array(ok), f, 0.0))
    else:
        ok, missing = _int_text_ok(arr)
        ints, ok = _cast_where(arr, ok, lambda a: pc.cast(a, pa.int64()), "0")
        values = from_int(ints)
    return _finish(values, missing, required, [(reason, ~ok & ~missing)])


def parse_temporal(arr: pa.Array, *, required: bool = True) -> tuple[pa.Array, Problems]:
    """Arrow timestamp / date column -> int64 Unix seconds (naive timestamps are taken as UTC)."""
    t = arr.type
    missing = _missing(arr)
    if pa.types.is_date(t):
        days = arr.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
        values = pc.multiply(pc.fill_null(days, 0), 86_400)
    else:
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        raw = pc.fill_null(arr.cast(pa.timestamp(t.unit)).cast(pa.int64()), 0)
        values = pc.floor(pc.divide(raw.cast(pa.float64()), float(per_second))).cast(pa.int64()) \
            if per_second != 1 else raw
    return _finish(values, missing, required, [])


def parse_iso(arr: pa.Array, *, required: bool = True) -> tuple[pa.Array, Problems]:
    """ISO-8601 text -> int64 Unix seconds; text with an offset (``Z``, ``+08:00``) is converted, text without
    one is taken as UTC."""
    arr = _as_plain(arr)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return parse_temporal(arr, required=required)
    if not _is_text(arr.type):
        arr = arr.cast(pa.string())
    missing = _missing(arr)
    epoch_z, epoch = pa.scalar("1970-01-01T00:00:00Z"), pa.scalar("1970-01-01T00:00:00")

    def cast(a: pa.Array) -> pa.Array:
        off = pc.match_substring_regex(a, _OFFSET_RE)
        aware = pc.cast(pc.if_else(off, a, epoch_z), pa.timestamp("us", tz="UTC"))
        naive = pc.cast(pc.if_else(off, epoch, a), pa.timestamp("us"))
        us = pc.if_else(off, aware.cast(pa.int64()), naive.cast(pa.int64()))
        return pc.floor(pc.divide(us.cast(pa.float64()), 1e6)).cast(pa.int64())

    problems: Problems = []
    try:
        values = cast(pc.if_else(pa.array(missing), epoch, arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = _np(pc.fill_null(pc.match_substring_regex(arr, _ISO_RE), False)) & ~missing
        values, ok = _cast_where(arr, ok, cast, "1970-01-01T00:00:00")
        problems.append(("bad_timestamp", ~ok & ~missing))
    return _finish(values, missing, required, problems)


def parse_mmdd_2014(arr: pa.Array, *, required: bool = True) -> tuple[pa.Array, Problems]:
    """IJCAI-15 ``time_stamp``: MMDD of 2014 -> Unix seconds of 00:00 that day at UTC+8."""
    ints, problems = parse_int(arr, required=required)
    v = ints.to_numpy(zero_copy_only=False)
    v = np.where(np.isnan(v.astype(np.float64)), 101, v).astype(np.int64) if ints.null_count else v
    month, day = v // 100, v % 100
    mi = np.clip(month - 1, 0, 11)
    valid = (month >= 1) & (month <= 12) & (day >= 1) & (day <= _DAYS_IN_MONTH_2014[mi])
    already = np.zeros(len(v), bool)
    for _, m in problems:
        already |= m
    bad = ~valid & ~already
    if bad.any():
        problems.append(("bad_timestamp", bad))
    seconds = IJCAI15_YEAR_START + (_MONTH_START_DAY[mi] + np.clip(day, 1, 31) - 1) * 86_400
    values = pa.array(seconds, pa.int64())
    if ints.null_count:
        values = pc.if_else(ints.is_null(), pa.scalar(None, pa.int64()), values)
    return values, problems


# ----------------------------------------------------------------------------------------------- file specs


@dataclass
class _Field:
    """One output column: where it comes from and how it is parsed."""

    target: str
    candidates: tuple[str, ...]  # source column names accepted, first match wins
    parse: Callable[[pa.Array], tuple[pa.Array, Problems]]
    required: bool = True  # False: the column may be absent from the file
    dictionary: bool = False  # read as dictionary<int32,string> (small code sets)
    source: str | None = None  # resolved name


def _resolve(path: Path, names: list[str], wanted: list[_Field]) -> list[_Field]:
    """Pick each field's source column; all missing required columns are named together."""
    present = set(names)
    missing, out = [], []
    for f in wanted:
        hit = next((c for c in f.candidates if c in present), None)
        if hit is None:
            if f.required:
                missing.append(f.candidates[0] if len(f.candidates) == 1 else " or ".join(f.candidates))
            continue
        out.append(_Field(f.target, f.candidates, f.parse, f.required, f.dictionary, hit))
    if missing:
        raise MissingColumnError(f"{path}: missing required column(s) {missing}; columns present: {names}",
                                 path=path)
    return out


@dataclass
class _FileState:
    """Counters and the first malformed rows of one file."""

    path: Path
    role: str
    tolerance: float
    header_lines: int = 0
    columns: list[str] = field(default_factory=list)
    rows_seen: int = 0  # rows the reader yielded (good + bad + blank), for line numbers
    good: int = 0
    malformed: int = 0
    blank: int = 0
    by_column: dict[str, dict[str, int]] = field(default_factory=dict)
    invalid_lines: list[int] = field(default_factory=list)  # kept only while line numbers are still needed
    first_invalid: list[dict] = field(default_factory=list)
    first_typed: list[dict] = field(default_factory=list)
    line_key: str = "line"
    labels: dict[str, str] = field(default_factory=dict)  # column name shown in reports (GroupLens f4 -> Rating)

    def count(self, column: str, reason: str, n: int) -> None:
        col = self.by_column.setdefault(self.labels.get(column, column), {})
        col[reason] = col.get(reason, 0) + n

    def on_invalid(self, row: Any) -> str:
        """pyarrow invalid-row handler: wrong field count."""
        self.malformed += 1
        if row.actual_columns < row.expected_columns:
            reason = "too_few_fields"
            column = self.columns[row.actual_columns] if row.actual_columns < len(self.columns) else "(row)"
        else:
            reason, column = "too_many_fields", "(extra fields)"
        self.count(column, reason, 1)
        if len(self.first_typed) < _FIRST_N and row.number is not None:
            self.invalid_lines.append(int(row.number))
        if len(self.first_invalid) < _FIRST_N:
            self.first_invalid.append({
                self.line_key: row.number, "reason": reason, "column": self.labels.get(column, column),
                "detail": f"{row.actual_columns} fields, expected {row.expected_columns}",
                "text": row.text[:_TEXT_LIMIT],
            })
        return "skip"

    def lines_of(self, g: np.ndarray) -> np.ndarray:
        """1-based physical lines of rows the reader yielded at stream indices ``g`` (0-based).

        The reader yields every non-skipped line in order (blank lines too, as all-empty rows), so row g is the
        (g+1)-th line after the header that the invalid-row handler did not take."""
        inv = np.sort(np.asarray(self.invalid_lines, dtype=np.int64))
        key = inv - self.header_lines - 1 - np.arange(len(inv))
        return self.header_lines + 1 + g + np.searchsorted(key, g, side="right")

    @property
    def total(self) -> int:
        return self.good + self.malformed

    def report(self, seconds: float) -> dict:
        by_reason: dict[str, int] = {}
        for reasons in self.by_column.values():
            for r, n in reasons.items():
                by_reason[r] = by_reason.get(r, 0) + n
        first = sorted(self.first_invalid + self.first_typed,
                       key=lambda d: (d[self.line_key] is None, d[self.line_key] or 0))[:_FIRST_N]
        return {
            "file": str(self.path), "role": self.role, "rows_total": self.total, "rows_good": self.good,
            "malformed": self.malformed, "blank_lines": self.blank, "malformed_by_reason": by_reason,
            "malformed_by_column": self.by_column, "first_malformed": first,
            "max_malformed_fraction": self.tolerance, "seconds": round(seconds, 3),
        }

    def summary(self) -> str:
        parts = [f"column {c!r}: " + ", ".join(f"{r} {n:,}" for r, n in sorted(rs.items()))
                 for c, rs in sorted(self.by_column.items())]
        return "; ".join(parts)

    def first_text(self) -> str:
        first = sorted(self.first_invalid + self.first_typed,
                       key=lambda d: (d[self.line_key] is None, d[self.line_key] or 0))[:_FIRST_N]
        return ", ".join(f"{self.line_key} {d[self.line_key]} ({d['column']}: {d['reason']}"
                         + (f", value {d['value']!r}" if "value" in d else f", text {d.get('text', '')!r}") + ")"
                         for d in first)

    def check_tolerance(self, *, final: bool, row_bound: int | None = None, seconds: float = 0.0) -> None:
        """Refuse the file past the tolerance.  Before the end, ``row_bound`` (an upper bound on the file's
        rows) lets a hopeless file fail early without changing the verdict."""
        if self.malformed == 0:
            return
        if final:
            frac = self.malformed / max(self.total, 1)
            if frac <= self.tolerance:
                return
            head = (f"{self.path}: {self.malformed:,} of {self.total:,} {self.role} rows ({frac:.4%}) are "
                    f"malformed, past the tolerance max_malformed_fraction={self.tolerance}")
        else:
            if row_bound is None or self.malformed <= self.tolerance * row_bound:
                return
            head = (f"{self.path}: {self.malformed:,} malformed {self.role} rows in the first {self.total:,} rows "
                    f"already exceed max_malformed_fraction={self.tolerance} of the at most {row_bound:,} rows "
                    f"the file can hold (stopped early)")
        raise MalformedRowsError(f"{head}. By column and reason: {self.summary()}. First malformed: "
                                 f"{self.first_text()}", path=self.path, report=self.report(seconds))


def _check_file(path: Path, role: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{role} file not found: {path}")
    if not path.is_file():
        raise IngestError(f"{path}: expected a file, found a directory", path=path)
    if path.stat().st_size == 0:
        raise EmptyInputError(f"{path}: empty input (0 bytes), no {role} rows", path=path)


def _header(path: Path, delimiter: str, quoting: bool) -> list[str]:
    with open(path, "rb") as fh:
        line = fh.readline(1 << 20)
    text = line.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if quoting:
        return next(csv.reader([text], delimiter=delimiter))
    return text.split(delimiter)


def _first_line_fields(path: Path, delimiter: str, quoting: bool) -> int:
    return len(_header(path, delimiter, quoting))


def _blank_rows(batch: pa.RecordBatch, candidates: np.ndarray) -> np.ndarray:
    """Rows (among ``candidates``, the bad ones) whose every field is empty: blank lines."""
    blank = np.zeros(batch.num_rows, bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        blank[idx] = _all_empty(batch.take(pa.array(idx)))
    return blank


def _all_empty(batch: pa.RecordBatch) -> np.ndarray:
    blank = np.ones(batch.num_rows, bool)
    for col in batch.columns:
        if pa.types.is_dictionary(col.type):
            lut = pa.array([v is None or v == "" for v in col.dictionary.to_pylist()], pa.bool_())
            blank &= _np(pc.fill_null(lut.take(col.indices), True))
        else:
            blank &= _missing(col)
    return blank


def _record_batch(state: _FileState, flds: list[_Field], batch: pa.RecordBatch, parsed: dict[str, tuple],
                  offset: int, line_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Count the problems of one batch; return the keep mask (None: every row good)."""
    problems = [(f, reason, mask) for f in flds for reason, mask in parsed[f.target][1] if mask.any()]
    if not problems:
        state.good += batch.num_rows
        return None
    bad = np.zeros(batch.num_rows, bool)
    for _, _, mask in problems:
        bad |= mask
    blank = _blank_rows(batch, bad)
    malformed = bad & ~blank
    state.blank += int(blank.sum())
    state.malformed += int(malformed.sum())
    state.good += batch.num_rows - int(bad.sum())
    for f, reason, mask in problems:
        n = int((mask & malformed).sum())
        if n:
            state.count(f.source, reason, n)
    need = _FIRST_N - len(state.first_typed)
    if need > 0 and malformed.any():
        idx = np.flatnonzero(malformed)[:need]
        lines = line_of(offset + idx)
        for i, line in zip(idx, lines):
            f, reason = next((f, r) for f, r, m in problems if m[i])
            raw = batch.column(f.source)[int(i)]
            value = raw.as_py() if not isinstance(raw, pa.DictionaryScalar) else raw.value.as_py()
            state.first_typed.append({state.line_key: int(line), "reason": reason,
                                      "column": state.labels.get(f.source, f.source),
                                      "value": (str(value)[:_TEXT_LIMIT] if value is not None else None)})
        if len(state.first_typed) >= _FIRST_N:
            state.invalid_lines = []  # no more line numbers will be computed
    return ~bad


def _log_file(state: _FileState, seconds: float) -> None:
    rate = state.total / seconds if seconds > 0 else float("inf")
    logger.info("read %s (%s): %s good rows, %s malformed, %s blank lines in %.1f s (%s rows/s)", state.path,
                state.role, f"{state.good:,}", f"{state.malformed:,}", f"{state.blank:,}", seconds,
                f"{rate:,.0f}")
    if state.malformed:
        logger.warning("%s: skipped %s malformed %s rows of %s (%.4f%%, tolerance %s): %s. First: %s", state.path,
                       f"{state.malformed:,}", state.role, f"{state.total:,}",
                       100 * state.malformed / max(state.total, 1), state.tolerance, state.summary(),
                       state.first_text())


def _finish_file(state: _FileState, started: float, chunks: dict[str, list]) -> tuple[dict, dict]:
    seconds = time.perf_counter() - started
    if state.total == 0:
        what = "a header only" if state.header_lines else "blank lines only"
        raise EmptyInputError(f"{state.path}: no {state.role} rows ({what})", path=state.path,
                              report=state.report(seconds))
    state.check_tolerance(final=True, seconds=seconds)
    if state.good == 0:
        raise EmptyInputError(f"{state.path}: no good {state.role} rows ({state.malformed:,} malformed)",
                              path=state.path, report=state.report(seconds))
    _log_file(state, seconds)
    return chunks, state.report(seconds)


class _InvalidRowHandler:
    """The Python callable pyarrow calls for rows with a wrong field count (a weak-referenceable object, so that
    :func:`_await_release` can tell when pyarrow has let go of it)."""

    __slots__ = ("state", "__weakref__")

    def __init__(self, state: _FileState):
        self.state = state

    def __call__(self, row: Any) -> str:
        return self.state.on_invalid(row)


def _await_release(alive: weakref.ref, path: Path, timeout_s: float = 5.0) -> None:
    """Wait until pyarrow's streaming reader has dropped our invalid-row handler.

    Why: the reader's internals can be destroyed on one of Arrow's pool threads, a moment after the Python reader
    object is gone; destroying them releases the Python handler, which needs the GIL.  If that happens while the
    interpreter is shutting down, the thread is killed inside a C++ destructor and the process aborts
    ("terminate called without an active exception", seen here on ~15% of short scripts).  Waiting here (with
    the GIL released by ``sleep``) makes the release happen while Python is fully alive."""
    deadline = time.monotonic() + timeout_s
    while alive() is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    if alive() is not None:
        logger.debug("%s: CSV reader still holds its invalid-row handler after %.0f s", path, timeout_s)


def read_csv_file(path: Path, wanted: list[_Field], *, role: str, tolerance: float, block_size: int,
                  column_names: list[str] | None = None, delimiter: str = ",", quoting: bool = False,
                  labels: dict[str, str] | None = None) -> tuple[dict[str, list[pa.Array]], dict]:
    """Stream one CSV file through the parsers of ``wanted``; return per-target chunk lists and the file report.

    ``column_names`` None: the first line is a header.  Else the file is headerless with these names.
    ``labels`` renames columns in reports and messages (positional names of headerless formats)."""
    _check_file(path, role)
    started = time.perf_counter()
    has_header = column_names is None
    names = _header(path, delimiter, quoting) if has_header else column_names
    flds = _resolve(path, names, wanted)
    state = _FileState(path=path, role=role, tolerance=tolerance, header_lines=int(has_header), columns=names,
                       labels=labels or {})
    types = {f.source: (pa.dictionary(pa.int32(), pa.string()) if f.dictionary else pa.string()) for f in flds}
    handler = _InvalidRowHandler(state)
    handler_alive = weakref.ref(handler)
    reader_opts: dict[str, Any] | None = dict(
        # use_threads=False: pyarrow reports InvalidRow.number (the physical line) only when parsing serially;
        # the streaming reader parses one block at a time anyway, so little speed is lost.
        read_options=pcsv.ReadOptions(use_threads=False, block_size=block_size, column_names=names,
                                      skip_rows=int(has_header)),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False,
                                        ignore_empty_lines=False, invalid_row_handler=handler),
        convert_options=pcsv.ConvertOptions(column_types=types, include_columns=[f.source for f in flds],
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    del handler
    row_bound = path.stat().st_size // 2 + 1  # every counted row takes >= 2 bytes (a field and a newline)
    chunks: dict[str, list[pa.Array]] = {f.target: [] for f in flds}
    reader = None
    try:
        reader = pcsv.open_csv(path, **reader_opts)
        with tqdm(desc=f"read {path.name}", unit=" rows", unit_scale=True, disable=None, leave=False) as bar:
            for batch in reader:
                # Checked when another batch arrives, so a file that ends here gets the exact final verdict.
                state.check_tolerance(final=False, row_bound=row_bound, seconds=time.perf_counter() - started)
                parsed = {f.target: f.parse(batch.column(f.source)) for f in flds}
                keep = _record_batch(state, flds, batch, parsed, state.rows_seen, state.lines_of)
                state.rows_seen += batch.num_rows
                keep_arr = pa.array(keep) if keep is not None else None
                for f in flds:
                    values = parsed[f.target][0]
                    chunks[f.target].append(values if keep_arr is None else values.filter(keep_arr))
                bar.update(batch.num_rows)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise EmptyInputError(f"{path}: no {role} rows (empty CSV)", path=path) from e
        raise IngestError(f"{path}: could not read as CSV: {e}", path=path) from e
    finally:
        reader = reader_opts = None
        _await_release(handler_alive, path)
    return _finish_file(state, started, chunks)


def read_parquet_file(path: Path, wanted: list[_Field], *, role: str, tolerance: float, batch_rows: int
                      ) -> tuple[dict[str, list[pa.Array]], dict]:
    """Parquet counterpart of :func:`read_csv_file`; malformed rows are reported by 1-based row number."""
    _check_file(path, role)
    started = time.perf_counter()
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise IngestError(f"{path}: could not read as Parquet: {e}", path=path) from e
    names = pf.schema_arrow.names
    flds = _resolve(path, names, wanted)
    state = _FileState(path=path, role=role, tolerance=tolerance, columns=names, line_key="row")
    chunks: dict[str, list[pa.Array]] = {f.target: [] for f in flds}
    if pf.metadata.num_rows == 0:
        raise EmptyInputError(f"{path}: no {role} rows (Parquet file with 0 rows)", path=path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=sorted({f.source for f in flds})):
        parsed = {f.target: f.parse(batch.column(f.source)) for f in flds}
        keep = _record_batch(state, flds, batch, parsed, state.rows_seen, lambda g: g + 1)
        state.rows_seen += batch.num_rows
        keep_arr = pa.array(keep) if keep is not None else None
        for f in flds:
            values = parsed[f.target][0]
            chunks[f.target].append(values if keep_arr is None else values.filter(keep_arr))
    return _finish_file(state, started, chunks)


# ----------------------------------------------------------------------------------------------- assembly


def _column(chunks: list[pa.Array]) -> pa.ChunkedArray:
    """Chunks of one column; generic ids that came out int64 in some batches and text in others become text."""
    types = {c.type for c in chunks}
    if len(types) > 1:
        chunks = [c.cast(pa.string()) for c in chunks]
    return pa.chunked_array(chunks, chunks[0].type if chunks else pa.int64())


def _interactions(chunks: dict[str, list[pa.Array]], names: tuple[str, ...]) -> pa.Table:
    dictionary = pa.array(list(names), pa.string())
    cols = {
        USER: _column(chunks[USER]), ITEM: _column(chunks[ITEM]),
        BEHAVIOR: pa.chunked_array([pa.DictionaryArray.from_arrays(c.cast(pa.int8()), dictionary)
                                    for c in chunks[BEHAVIOR]], pa.dictionary(pa.int8(), pa.string())),
        TIMESTAMP: _column(chunks[TIMESTAMP]),
    }
    for opt in OPTIONAL_ID_COLUMNS:
        if opt in chunks:
            cols[opt] = _column(chunks[opt])
    table = pa.table(cols)
    check_canonical(table, where="ingest output")
    return table


def _behavior_counts(table: pa.Table, names: tuple[str, ...]) -> dict[str, int]:
    counts = np.zeros(len(names), np.int64)
    for chunk in table.column(BEHAVIOR).chunks:
        counts += np.bincount(chunk.indices.to_numpy(zero_copy_only=False), minlength=len(names))
    return {n: int(c) for n, c in zip(names, counts)}


def _profiles(chunks: dict[str, list[pa.Array]]) -> pa.Table:
    return pa.table({name: _column(c) for name, c in chunks.items()})


def _empty_profiles(user_type: pa.DataType) -> pa.Table:
    return pa.table({USER: pa.array([], user_type)})


# ----------------------------------------------------------------------------------------------- datasets


def _behavior_field(source: str | tuple[str, ...], table: dict[str, int]) -> _Field:
    def lookup(v: str) -> Any:
        return table.get(v, _UNKNOWN)

    cands = (source,) if isinstance(source, str) else source
    return _Field(BEHAVIOR, cands, lambda a: parse_decode(a, lookup, pa.int8(), required=True,
                                                          unknown_reason="unknown_behavior"), dictionary=True)


def _int_field(target: str, source: str | tuple[str, ...], *, required: bool = True, float_text: bool = False,
               optional_column: bool = False) -> _Field:
    cands = (source,) if isinstance(source, str) else source
    return _Field(target, cands, lambda a: parse_int(a, required=required, float_text=float_text),
                  required=not optional_column)


def _in_folder(raw: Path, names: tuple[str, ...], what: str) -> Path:
    if raw.is_file():
        return raw
    if not raw.exists():
        raise FileNotFoundError(f"{what}: path not found: {raw}")
    for n in names:
        if (raw / n).is_file():
            return raw / n
    raise FileNotFoundError(f"{what}: none of {list(names)} found in {raw}")


def _optional_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_taobao(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    path = _in_folder(raw, ("UserBehavior.csv",), "taobao")
    names = BEHAVIORS["taobao"]
    codes = {"pv": 0, "cart": 1, "fav": 2, "buy": 3}
    assert [names[c] for c in codes.values()] == ["click", "cart", "fav", "buy"]
    wanted = [_int_field(USER, "user_id"), _int_field(ITEM, "item_id"),
              _int_field("category_id", "category_id", required=False),
              _behavior_field("behavior_type", codes), _Field(TIMESTAMP, ("timestamp",), parse_seconds)]
    chunks, rep = read_csv_file(path, wanted, role="interactions", tolerance=tol, block_size=block,
                                column_names=["user_id", "item_id", "category_id", "behavior_type", "timestamp"])
    return _interactions(chunks, names), _empty_profiles(pa.int64()), [rep]


def _code_lookup(table: dict[int, str], none_codes: tuple[int, ...]) -> Callable[[str], Any]:
    """Decode float-or-int text codes (``6.0`` or ``6``) through ``table``; ``none_codes`` mean unknown."""

    def lookup(v: str) -> Any:
        try:
            f = float(v)
        except ValueError:
            return _UNKNOWN
        if not math.isfinite(f) or not f.is_integer():
            return _UNKNOWN
        code = int(f)
        if code in none_codes:
            return None
        return table.get(code, _UNKNOWN)

    return lookup


def _read_ijcai15(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    log = _in_folder(raw, ("user_log_format1.csv", "user_log_sample.csv"), "ijcai15")
    names = BEHAVIORS["ijcai15"]
    # action_type: 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite
    action = _code_lookup({0: names.index("click"), 1: names.index("cart"), 2: names.index("buy"),
                           3: names.index("fav")}, ())
    wanted = [
        _int_field(USER, "user_id"), _int_field(ITEM, "item_id"),
        _int_field("category_id", "cat_id", required=False, float_text=True, optional_column=True),
        _int_field("seller_id", ("seller_id", "merchant_id"), required=False, float_text=True,
                   optional_column=True),
        _int_field("brand_id", "brand_id", required=False, float_text=True, optional_column=True),
        _Field(TIMESTAMP, ("time_stamp", "time_tamp"), parse_mmdd_2014),
        _Field(BEHAVIOR, ("action_type",), lambda a: parse_decode(a, action, pa.int8(), required=True,
                                                                  unknown_reason="unknown_behavior"),
               dictionary=True),
    ]
    chunks, rep = read_csv_file(log, wanted, role="interactions", tolerance=tol, block_size=block)
    reports = [rep]
    profiles = _empty_profiles(pa.int64())
    info = _optional_file(log.parent, ("user_info_format1.csv", "user_info_sample.csv")) if raw.is_dir() else None
    if info is not None:
        age = _code_lookup(IJCAI15_AGE_BANDS, (0,))
        gender = _code_lookup(IJCAI15_GENDERS, (2,))
        pw = [
            _int_field(USER, "user_id", float_text=True),
            _Field("age_range", ("age_range",), lambda a: parse_decode(a, age, pa.string(), required=False,
                                                                       unknown_reason="unknown_code"),
                   dictionary=True),
            _Field("gender", ("gender",), lambda a: parse_decode(a, gender, pa.string(), required=False,
                                                                 unknown_reason="unknown_code"), dictionary=True),
        ]
        pchunks, prep = read_csv_file(info, pw, role="profiles", tolerance=tol, block_size=block)
        profiles = _profiles(pchunks)
        reports.append(prep)
    return _interactions(chunks, names), profiles, reports


def _read_cikm2019(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    path = _in_folder(raw, ("user_behavior.csv",), "cikm2019")
    names = BEHAVIORS["cikm2019"]
    codes = {"pv": 0, "cart": 1, "fav": 2, "buy": 3}
    wanted = [_int_field(USER, "userID"), _int_field(ITEM, "itemID"), _behavior_field("behavior", codes),
              _Field(TIMESTAMP, ("timestamp",), lambda a: parse_seconds(a, offset=CIKM2019_BASE))]
    chunks, rep = read_csv_file(path, wanted, role="interactions", tolerance=tol, block_size=block,
                                column_names=["userID", "itemID", "behavior", "timestamp"])
    reports = [rep]
    table = _interactions(chunks, names)
    folder = path.parent
    item_file = _optional_file(folder, ("item.csv",)) if raw.is_dir() else None
    if item_file is not None:
        iw = [_int_field(ITEM, "itemID"),
              _int_field("category_id", "categoryID", required=False, float_text=True),
              _int_field("seller_id", "shopID", required=False, float_text=True),
              _int_field("brand_id", "brandID", required=False, float_text=True)]
        ichunks, irep = read_csv_file(item_file, iw, role="items", tolerance=tol, block_size=block,
                                      column_names=["itemID", "categoryID", "shopID", "brandID"])
        reports.append(irep)
        items = pa.table({k: _column(v) for k, v in ichunks.items()}).combine_chunks()
        # First row per item wins; items absent from item.csv get null attributes.
        idx = pc.index_in(table.column(ITEM), value_set=items.column(ITEM))
        for col in ("category_id", "seller_id", "brand_id"):
            table = table.append_column(col, items.column(col).take(idx))
    profiles = _empty_profiles(pa.int64())
    user_file = _optional_file(folder, ("user.csv",)) if raw.is_dir() else None
    if user_file is not None:
        uw = [_int_field(USER, "userID"),
              _Field("gender", ("gender",), lambda a: parse_text(a, strip_float_zero=True)),
              _Field("age", ("age",), lambda a: parse_text(a, strip_float_zero=True)),
              _Field("purchase_level", ("purchaseLevel",), lambda a: parse_text(a, strip_float_zero=True))]
        uchunks, urep = read_csv_file(user_file, uw, role="profiles", tolerance=tol, block_size=block,
                                      column_names=["userID", "gender", "age", "purchaseLevel"])
        reports.append(urep)
        profiles = _profiles(uchunks)
    return table, profiles, reports


def _rating_level(v: str) -> Any:
    """MovieLens rating -> behavior level: 1-2 rating_low, 3 rating_mid, 4-5 rating_high (schema.BEHAVIORS)."""
    try:
        r = float(v)
    except ValueError:
        return _UNKNOWN
    levels = {1.0: 0, 2.0: 0, 3.0: 1, 4.0: 2, 5.0: 2}
    return levels.get(r, _UNKNOWN)


def _read_ml1m(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    names = BEHAVIORS["ml1m"]
    folder = raw if raw.is_dir() else raw.parent
    if not raw.exists():
        raise FileNotFoundError(f"ml1m: path not found: {raw}")
    rating = lambda a: parse_decode(a, _rating_level, pa.int8(), required=True,  # noqa: E731
                                    unknown_reason="unknown_behavior")
    inter = raw if raw.is_file() and raw.suffix == ".inter" else _optional_file(folder, ("ml-1m.inter",))
    if inter is not None:
        # RecBole atomic files: tab-separated, typed headers ("user_id:token"); ids stay text.
        names_in = _header(inter, "\t", False)
        by_base = {n.split(":")[0]: n for n in names_in}

        def typed(base: str) -> tuple[str, ...]:
            return (by_base.get(base, base),)

        wanted = [_Field(USER, typed("user_id"), lambda a: parse_text(a, required=True)),
                  _Field(ITEM, typed("item_id"), lambda a: parse_text(a, required=True)),
                  _Field(BEHAVIOR, typed("rating"), rating, dictionary=True),
                  _Field(TIMESTAMP, typed("timestamp"), lambda a: parse_seconds(a, fractional=True))]
        chunks, rep = read_csv_file(inter, wanted, role="interactions", tolerance=tol, block_size=block,
                                    delimiter="\t")
        reports = [rep]
        profiles = _empty_profiles(pa.string())
        user_file = _optional_file(inter.parent, (inter.stem + ".user",))
        if user_file is not None:
            ub = {n.split(":")[0]: n for n in _header(user_file, "\t", False)}
            uw = [_Field(USER, (ub.get("user_id", "user_id"),), lambda a: parse_text(a, required=True))]
            uw += [_Field(c, (ub.get(c, c),), lambda a: parse_text(a, strip_float_zero=True), required=False)
                   for c in ("age", "gender", "occupation")]
            uchunks, urep = read_csv_file(user_file, uw, role="profiles", tolerance=tol, block_size=block,
                                          delimiter="\t")
            reports.append(urep)
            profiles = _profiles(uchunks)
        return _interactions(chunks, names), profiles, reports
    ratings = raw if raw.is_file() and raw.name == "ratings.dat" else _optional_file(folder, ("ratings.dat",))
    if ratings is None:
        raise FileNotFoundError(f"ml1m: neither ml-1m.inter nor ratings.dat found in {folder}")
    # GroupLens "::" separator read as ":" with empty fields in between (f1, f3, f5 are always empty).
    cols = [f"f{i}" for i in range(7)]
    wanted = [_int_field(USER, "f0"), _int_field(ITEM, "f2"), _Field(BEHAVIOR, ("f4",), rating, dictionary=True),
              _Field(TIMESTAMP, ("f6",), parse_seconds)]
    chunks, rep = read_csv_file(ratings, wanted, role="interactions", tolerance=tol, block_size=block,
                                column_names=cols, delimiter=":",
                                labels={"f0": "UserID", "f2": "MovieID", "f4": "Rating", "f6": "Timestamp"})
    reports = [rep]
    profiles = _empty_profiles(pa.int64())
    users = _optional_file(ratings.parent, ("users.dat",))
    if users is not None:
        uw = [_int_field(USER, "f0"),
              _Field("gender", ("f2",), lambda a: parse_text(a)),
              _Field("age", ("f4",), lambda a: parse_text(a, strip_float_zero=True)),
              _Field("occupation", ("f6",), lambda a: parse_text(a, strip_float_zero=True))]
        uchunks, urep = read_csv_file(users, uw, role="profiles", tolerance=tol, block_size=block,
                                      column_names=[f"f{i}" for i in range(9)], delimiter=":",
                                      labels={"f0": "UserID", "f2": "Gender", "f4": "Age", "f6": "Occupation",
                                              "f8": "Zip-code"})
        reports.append(urep)
        profiles = _profiles(uchunks)
    return _interactions(chunks, names), profiles, reports


def _read_generic(raw: Path, mapping: GenericMapping, tol: float, block: int
                  ) -> tuple[pa.Table, pa.Table, list[dict]]:
    if not raw.exists():
        raise FileNotFoundError(f"generic: file not found: {raw}")
    if raw.is_dir():
        raise IngestError(f"{raw}: dataset 'generic' needs a CSV or Parquet file, got a directory", path=raw)
    is_parquet = raw.suffix.lower() in (".parquet", ".pq")

    def src(name: str) -> str:
        if not is_parquet and not mapping.has_header and name.isdigit():
            return f"f{name}"
        return name

    vocab = mapping.vocabulary()
    wanted = [_Field(USER, (src(mapping.user_id),), lambda a: parse_id_auto(a)),
              _Field(ITEM, (src(mapping.item_id),), lambda a: parse_id_auto(a))]
    unit = mapping.timestamp_unit
    if unit == "iso":
        wanted.append(_Field(TIMESTAMP, (src(mapping.timestamp),), parse_iso))
    else:
        div = 1000 if unit == "ms" else 1
        wanted.append(_Field(TIMESTAMP, (src(mapping.timestamp),),
                             lambda a: parse_seconds(a, divisor=div, fractional=True)))
    if mapping.behavior is not None:
        table = {raw_v: vocab.index(name) for raw_v, name in mapping.behavior_values.items()}
        wanted.append(_behavior_field(src(mapping.behavior), table))
    for opt in OPTIONAL_ID_COLUMNS:
        name = getattr(mapping, opt)
        if name is not None:
            wanted.append(_Field(opt, (src(name),), lambda a: parse_id_auto(a, required=False)))
    if is_parquet:
        chunks, rep = read_parquet_file(raw, wanted, role="interactions", tolerance=tol,
                                        batch_rows=max(1024, block // 64))
    else:
        _check_file(raw, "interactions")
        column_names = None
        if not mapping.has_header:
            column_names = [f"f{i}" for i in range(_first_line_fields(raw, mapping.delimiter, True))]
        chunks, rep = read_csv_file(raw, wanted, role="interactions", tolerance=tol, block_size=block,
                                    column_names=column_names, delimiter=mapping.delimiter, quoting=True)
    if mapping.behavior is None:
        chunks[BEHAVIOR] = [pa.array(np.zeros(len(c), np.int8)) for c in chunks[USER]]
    user_type = chunks[USER][0].type if chunks[USER] else pa.int64()
    return _interactions(chunks, vocab), _empty_profiles(user_type), [rep]


def read_dataset(dataset: str, raw_path: str | Path, *, mapping: GenericMapping | dict | None = None,
                 max_malformed_fraction: float = 0.001, block_size: int = 16 << 20) -> IngestResult:
    """Read one raw dataset into the canonical tables.

    ``raw_path``: taobao -> ``UserBehavior.csv`` or its folder; ijcai15, cikm2019, ml1m -> the folder (see
    ``data-formats.md``); generic -> a CSV or Parquet file read through ``mapping``.  Malformed rows are skipped
    and reported while malformed / total <= ``max_malformed_fraction`` (per file); past it
    :class:`MalformedRowsError`.  ``block_size`` is the CSV reader's block in bytes (one record batch each).

    The report holds, per file, rows_total / rows_good / malformed / blank_lines, counts by reason and by column,
    the first 5 malformed rows (line, reason, column, value); and for the dataset the behavior counts.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    if not 0.0 <= max_malformed_fraction <= 1.0:
        raise ValueError(f"max_malformed_fraction must be in [0, 1], got {max_malformed_fraction}")
    raw = Path(raw_path)
    if not raw.exists():
        raise FileNotFoundError(f"{dataset}: raw path not found: {raw}")
    started = time.perf_counter()
    if dataset == "generic":
        m = GenericMapping.from_any(mapping)
        interactions, profiles, files = _read_generic(raw, m, max_malformed_fraction, block_size)
        vocab = m.vocabulary()
    else:
        if mapping is not None:
            raise ValueError(f"mapping is only used with dataset 'generic', not {dataset!r}")
        reader = {"taobao": _read_taobao, "ijcai15": _read_ijcai15, "cikm2019": _read_cikm2019,
                  "ml1m": _read_ml1m}[dataset]
        interactions, profiles, files = reader(raw, max_malformed_fraction, block_size)
        vocab = BEHAVIORS[dataset]
    counts = _behavior_counts(interactions, vocab)
    report = {
        "dataset": dataset, "source": str(raw), "max_malformed_fraction": max_malformed_fraction,
        "rows": interactions.num_rows, "profile_rows": profiles.num_rows,
        "malformed_rows": sum(f["malformed"] for f in files), "behavior_vocabulary": list(vocab),
        "behavior_counts": counts, "columns": interactions.column_names, "files": files,
        "seconds": round(time.perf_counter() - started, 3),
    }
    logger.info("ingest %s: %s interactions, %s profiles, behaviors %s", dataset, f"{interactions.num_rows:,}",
                f"{profiles.num_rows:,}", counts)
    return IngestResult(interactions=interactions, profiles=profiles, report=report)
