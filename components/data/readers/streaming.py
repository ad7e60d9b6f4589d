"""Streaming one raw file (CSV or Parquet) through column parsers, with malformed-row accounting.

Why it is built this way:

* Raw logs are big (Taobao UserBehavior: 100M rows, 3.5 GB), so every CSV is read with pyarrow's *streaming*
  reader in record batches and each batch is converted at once to compact columns (int64 ids, int8 behavior codes,
  int64 seconds).  No string column of a numeric field outlives its batch, so memory is bounded by the output.
* Raw logs are also dirty (the public Taobao head ends in a truncated line).  A malformed row is counted per reason
  and column, the first five are reported with their 1-based physical line numbers, and the row is skipped, as long
  as malformed / total <= ``max_malformed_fraction``.  Past that the reader refuses the file with
  :class:`MalformedRowsError`, whose message names the file, the columns, the counts and the tolerance.

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

from components.data.readers.parsing import _UNKNOWN, Problems, _missing, _np, parse_decode, parse_int
from components.data.schema import BEHAVIOR

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class _FileState:
    """Counters and the first malformed rows of one file."""

    path: Path
    role: str
    tolerance: float
    header_lines: int = 0
    columns: list[str] = field(default_factory=list)
    rows_seen: int = 0  # rows the reader yielded (good + bad + blank), for line numbers
    batches: int = 0
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


#: Every this many batches the Arrow allocator returns the memory of the batches' freed text columns to the OS
#: (left to itself it keeps a share of it, ~40% of the output's size on 100M Taobao rows).
_RELEASE_BATCHES = 4


def _release_every(n: int, state: _FileState) -> None:
    state.batches += 1
    if state.batches % n == 0:
        pa.default_memory_pool().release_unused()


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
                batch = parsed = keep_arr = values = None
                _release_every(_RELEASE_BATCHES, state)
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


# ----------------------------------------------------------------------------------------------- finding files


def _in_folder(raw: Path, names: tuple[str, ...], what: str) -> Path:
    """``raw`` itself when it is a file, else the first of ``names`` inside the folder ``raw``."""
    if raw.is_file():
        return raw
    if not raw.exists():
        raise FileNotFoundError(f"{what}: path not found: {raw}")
    for n in names:
        if (raw / n).is_file():
            return raw / n
    raise FileNotFoundError(f"{what}: none of {list(names)} found in {raw}")


def _optional_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``, or None."""
    return next((folder / n for n in names if (folder / n).is_file()), None)
