"""Column parsers: one batch column of raw text (or typed Parquet values) -> compact output values + problems.

A parser takes one batch column and returns (values, problems): values of the output type (anything at bad
positions, which are filtered out later) and a list of (reason, numpy bool mask of bad rows).  The common case is
one vectorised cast per column; only when it fails does the slow path run, which finds the bad rows with
vectorised regex / length checks (plus a bisection for the rare value that passes the regex but not the cast),
never with a Python loop over rows.  Reasons: ``missing_value``, ``not_an_integer``, ``not_a_number``,
``bad_timestamp`` and whatever ``unknown_reason`` a :func:`parse_decode` caller names.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: 2014-01-01 00:00 at UTC+8: IJCAI-15 MMDD stamps are days of 2014 in China Standard Time.
IJCAI15_YEAR_START = 1_388_505_600
_DAYS_IN_MONTH_2014 = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_MONTH_START_DAY = np.concatenate([[0], np.cumsum(_DAYS_IN_MONTH_2014)[:-1]])

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


def _text_and_missing(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``arr`` as text (cast when it is not) and where it is missing."""
    arr = arr if _is_text(arr.type) else arr.cast(pa.string())
    return arr, _missing(arr)


def parse_id_auto(arr: pa.Array, *, required: bool = True) -> tuple[pa.Array, Problems]:
    """Generic ids: int64 when every present value is a canonical integer (so casting back to text is lossless),
    else the text itself.  Batches may disagree; :func:`_column` then turns every chunk into text."""
    arr = _as_plain(arr)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return parse_int(arr, required=required)
    arr, missing = _text_and_missing(arr)
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
    arr, missing = _text_and_missing(arr)
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


# ----------------------------------------------------------------------------------------------- strftime patterns

#: strptime directives that carry a year; a pattern without one needs a ``default_year``.
YEAR_DIRECTIVES = frozenset("YyGcx")
#: Directives Arrow's ``strptime`` reads as Python does (zero-padded or not, checked by the round trip); a pattern
#: with any other (``%y``'s century, ``%b``'s locale names, ``%z``, ``%f``, ...) is read by Python alone.
_ARROW_DIRECTIVES = frozenset("YmdHMS")


def format_directives(fmt: str) -> list[str]:
    """The directive letters of a strftime pattern in order (``%%`` is a literal percent sign, not a directive)."""
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            if fmt[i + 1] != "%":
                out.append(fmt[i + 1])
            i += 2
        else:
            i += 1
    return out


def _python_seconds(values: list[str], fmt: str) -> list[int | None]:
    """Python's ``datetime.strptime`` of each value -> Unix seconds (floored; naive = UTC), None where it fails.
    The reference semantics of :func:`parse_strftime`; called on distinct values only."""
    out: list[int | None] = []
    for v in values:
        try:
            dt = datetime.strptime(v, fmt)
        except ValueError:
            out.append(None)
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        out.append(math.floor(dt.timestamp()))
    return out


def parse_strftime(arr: pa.Array, *, fmt: str, default_year: int | None = None, utc_offset_s: int = 0,
                   required: bool = True) -> tuple[pa.Array, Problems]:
    """Text in a strftime pattern (Python's ``datetime.strptime`` directives, e.g. ``%m%d``, ``%m-%d``,
    ``%d/%m/%Y %H:%M``) -> int64 Unix seconds.

    ``default_year``: the year of every value, for patterns without one (day-level logs such as Tmall's ``6-4``).
    A value without an offset (no ``%z``) is a local time ``utc_offset_s`` seconds ahead of UTC (0: UTC).
    Values that are no valid date in the pattern (``0229`` of 2014, ``13-01``, other text) are ``bad_timestamp``.

    Fast path: Arrow's ``strptime`` on the whole column, kept where formatting the result back gives the input
    exactly (Arrow rolls over impossible days, 0631 -> 07-01; the round trip catches that).  Other values, e.g.
    unpadded ``6-4``, and every value of a pattern with a directive outside ``%Y %m %d %H %M %S`` go through
    Python's ``strptime``, once per distinct value of the batch."""
    arr = _as_plain(arr)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return parse_temporal(arr, required=required)
    arr, missing = _text_and_missing(arr)
    text = pc.utf8_trim_whitespace(arr)
    full = fmt
    if default_year is not None:
        text = pc.binary_join_element_wise(pa.scalar(f"{default_year:04d}"), text, " ")
        full = "%Y " + fmt
    directives = format_directives(full)
    if set(directives) <= _ARROW_DIRECTIVES:
        parsed = pc.strptime(text, format=full, unit="s", error_is_null=True)
        exact = _np(pc.fill_null(pc.equal(pc.strftime(parsed, format=full), text), False))
        values = np.asarray(pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), np.int64)
        values = values.copy()
    else:
        exact, values = np.zeros(len(arr), bool), np.zeros(len(arr), np.int64)
    slow = np.flatnonzero(~exact & ~missing)
    bad = np.zeros(len(arr), bool)
    if slow.size:
        sub = pc.dictionary_encode(text.take(pa.array(slow)))
        got = _python_seconds(sub.dictionary.to_pylist(), full)
        codes = sub.indices.to_numpy(zero_copy_only=False)
        lut_ok = np.array([g is not None for g in got], bool)
        lut = np.array([g if g is not None else 0 for g in got], np.int64)
        values[slow] = lut[codes]
        bad[slow] = ~lut_ok[codes]
    if utc_offset_s and "z" not in directives:
        values -= utc_offset_s
    problems: Problems = [("bad_timestamp", bad)] if bad.any() else []
    return _finish(pa.array(values, pa.int64()), missing, required, problems)
