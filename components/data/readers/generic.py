"""Generic: any CSV or Parquet interactions file, read through a :class:`GenericMapping` that names its columns.

Ids are int64 when every value is a canonical integer, else text; the behavior column is optional (without it every
row is the single behavior ``interact``).  Timestamps are either numeric or ISO-8601 (``timestamp_unit``: Unix
seconds, milliseconds or ISO text) or text in a strftime pattern (``timestamp_format``, e.g. ``%m%d`` for Tmall's
day stamps, with ``default_year`` when the pattern has no year and ``utc_offset`` for local times).

Order of events with equal timestamps: cleaning sorts each user's events by time *stably*, so ties keep the order
the reader hands over.  Without ``tie_break`` that is file order.  With ``tie_break`` (a column such as a sequence
number or a finer time of day) the reader orders the rows by (user, timestamp, tie_break, file order): ties are
ordered by that column (numerically when every value is a number, else as text; empty values last) and rows that
tie on it too keep file order.  The column is used for ordering only and is not kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.readers.parsing import (_INT_RE, _NUMBER_RE, YEAR_DIRECTIVES, format_directives,
                                             parse_id_auto, parse_iso, parse_seconds, parse_strftime, parse_text)
from components.data.readers.streaming import (IngestError, MalformedRowsError, _behavior_field, _check_file,
                                               _Field, _first_line_fields, read_csv_file, read_parquet_file)
from components.data.readers.tables import OPTIONAL_ID_COLUMNS, _column, _empty_profiles, _interactions
from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER
from components.settings import from_dict

#: The vocabulary of a mapping without a behavior column.
BEHAVIORS = ("interact",)


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
    #: "s" | "ms" | "iso" (ISO-8601 text, UTC unless it carries an offset); "s" when neither it nor
    #: ``timestamp_format`` is given.  Mutually exclusive with ``timestamp_format``.
    timestamp_unit: str | None = None
    category_id: str | None = None
    seller_id: str | None = None
    brand_id: str | None = None
    delimiter: str = ","  # CSV only
    has_header: bool = True  # CSV only
    # Added after the fields above so that positional construction keeps its meaning.
    #: A strftime pattern of text timestamps (Python's ``strptime`` directives): "%m%d" reads IJCAI-15's "0604",
    #: "%m-%d" Tmall's "6-4", "%Y-%m-%d %H:%M:%S" a plain datetime.  Values that do not match are malformed rows.
    timestamp_format: str | None = None
    #: The year of every timestamp, for a ``timestamp_format`` without a year directive (%Y, %y, ...); required
    #: there and refused otherwise.
    default_year: int | None = None
    #: Offset from UTC of ``timestamp_format`` values that carry none ("+08:00" for China Standard Time); UTC when
    #: None.  Refused with ``timestamp_unit`` and with a pattern that has %z.
    utc_offset: str | None = None
    #: Column ordering events with equal timestamps (see the module docstring); None keeps file order.
    tie_break: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp_format is not None and self.timestamp_unit is not None:
            raise ValueError(f"GenericMapping: timestamp_unit {self.timestamp_unit!r} and timestamp_format "
                             f"{self.timestamp_format!r} are mutually exclusive; give timestamp_unit for numeric "
                             "or ISO-8601 timestamps, timestamp_format for text in a strftime pattern")
        if self.timestamp_format is None:
            if self.timestamp_unit is None:
                self.timestamp_unit = "s"
            if self.timestamp_unit not in ("s", "ms", "iso"):
                raise ValueError(f"GenericMapping.timestamp_unit must be 's', 'ms' or 'iso', got "
                                 f"{self.timestamp_unit!r} (for text in another layout, give timestamp_format)")
            for key in ("default_year", "utc_offset"):
                if getattr(self, key) is not None:
                    raise ValueError(f"GenericMapping.{key} applies to timestamp_format only; with timestamp_unit "
                                     f"{self.timestamp_unit!r} it would be ignored")
        else:
            self._check_format()
        if self.behavior is not None and not self.behavior_values:
            raise ValueError(f"GenericMapping: behavior column {self.behavior!r} is set but behavior_values is "
                             "empty; give raw value -> canonical name for every allowed value")
        if self.behavior is None and self.behavior_values:
            raise ValueError("GenericMapping: behavior_values given but no behavior column")
        if self.behavior_values:
            self.behavior_values = {str(k): str(v) for k, v in self.behavior_values.items()}

    def _check_format(self) -> None:
        fmt = self.timestamp_format
        directives = format_directives(fmt) if isinstance(fmt, str) else []
        if not directives:
            raise ValueError(f"GenericMapping.timestamp_format must be a strftime pattern with directives such as "
                             f"'%m%d' or '%Y-%m-%d %H:%M:%S', got {fmt!r}")
        has_year = bool(YEAR_DIRECTIVES & set(directives))
        if has_year and self.default_year is not None:
            raise ValueError(f"GenericMapping.default_year {self.default_year} is given but timestamp_format "
                             f"{fmt!r} has a year of its own; drop default_year")
        if not has_year and self.default_year is None:
            raise ValueError(f"GenericMapping.timestamp_format {fmt!r} has no year (%Y or %y): set default_year, "
                             "the year of every event (e.g. default_year: 2014 for IJCAI-15 / Tmall day stamps)")
        if self.default_year is not None and (isinstance(self.default_year, bool)
                                              or not isinstance(self.default_year, int)
                                              or not 1 <= self.default_year <= 9999):
            raise ValueError(f"GenericMapping.default_year must be a year (an integer 1..9999), got "
                             f"{self.default_year!r}")
        if self.utc_offset is not None:
            if "z" in directives:
                raise ValueError(f"GenericMapping.utc_offset {self.utc_offset!r} is given but timestamp_format "
                                 f"{fmt!r} reads the offset from each value (%z); drop one")
            self.utc_offset_seconds()  # validates the text
        full = fmt if self.default_year is None else "%Y " + fmt
        sample = datetime(2014, 6, 4, 10, 30, 15, tzinfo=timezone.utc)
        try:
            datetime.strptime(sample.strftime(full), full)
        except ValueError as e:
            raise ValueError(f"GenericMapping.timestamp_format {fmt!r} is not a pattern Python's strptime "
                             f"reads: {e}") from e

    def utc_offset_seconds(self) -> int:
        """``utc_offset`` ("+08:00", "-0530", "Z") in seconds east of UTC; 0 when unset."""
        if self.utc_offset is None or self.utc_offset in ("Z", "+00:00", "UTC"):
            return 0
        m = re.fullmatch(r"([+-])([0-9]{2}):?([0-9]{2})", str(self.utc_offset))
        if m is None or int(m.group(2)) > 23 or int(m.group(3)) > 59:
            raise ValueError(f"GenericMapping.utc_offset must look like '+08:00' or '-0530', got "
                             f"{self.utc_offset!r}")
        seconds = int(m.group(2)) * 3600 + int(m.group(3)) * 60
        return seconds if m.group(1) == "+" else -seconds

    def timestamp_text(self) -> str:
        """How the timestamp column is read, in words, for messages."""
        if self.timestamp_format is None:
            return f"timestamp_unit {self.timestamp_unit!r}"
        extra = f", default_year {self.default_year}" if self.default_year is not None else ""
        extra += f", utc_offset {self.utc_offset!r}" if self.utc_offset is not None else ""
        return f"timestamp_format {self.timestamp_format!r}{extra}"

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
            return BEHAVIORS
        return tuple(dict.fromkeys(self.behavior_values.values()))

    @staticmethod
    def vocabulary_of(mapping: "GenericMapping | dict | None") -> tuple[str, ...]:
        """The vocabulary a mapping gives, read from a config's raw dict without validating the rest of it."""
        if isinstance(mapping, GenericMapping):
            return mapping.vocabulary()
        values = (mapping or {}).get("behavior_values")
        return tuple(dict.fromkeys(values.values())) if values else BEHAVIORS


_TIE = "tie_break"


def read(raw: Path, tol: float, block: int, mapping: GenericMapping) -> tuple[pa.Table, pa.Table, list[dict]]:
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
              _Field(ITEM, (src(mapping.item_id),), lambda a: parse_id_auto(a)),
              _Field(TIMESTAMP, (src(mapping.timestamp),), _timestamp_parser(mapping))]
    if mapping.behavior is not None:
        table = {raw_v: vocab.index(name) for raw_v, name in mapping.behavior_values.items()}
        wanted.append(_behavior_field(src(mapping.behavior), table))
    for opt in OPTIONAL_ID_COLUMNS:
        name = getattr(mapping, opt)
        if name is not None:
            wanted.append(_Field(opt, (src(name),), lambda a: parse_id_auto(a, required=False)))
    if mapping.tie_break is not None:
        wanted.append(_Field(_TIE, (src(mapping.tie_break),), lambda a: parse_text(a)))
    try:
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
    except MalformedRowsError as e:
        raise _with_timestamp_hint(e, mapping, src(mapping.timestamp)) from e
    if mapping.behavior is None:
        chunks[BEHAVIOR] = [pa.array(np.zeros(len(c), np.int8)) for c in chunks[USER]]
    tie = chunks.pop(_TIE, None)
    user_type = chunks[USER][0].type if chunks[USER] else pa.int64()
    interactions = _interactions(chunks, vocab)
    if tie is not None:
        interactions = _order_ties(interactions, _column(tie))
    return interactions, _empty_profiles(user_type), [rep]


def _timestamp_parser(mapping: GenericMapping):
    if mapping.timestamp_format is not None:
        fmt, year, offset = mapping.timestamp_format, mapping.default_year, mapping.utc_offset_seconds()
        return lambda a: parse_strftime(a, fmt=fmt, default_year=year, utc_offset_s=offset)
    if mapping.timestamp_unit == "iso":
        return parse_iso
    div = 1000 if mapping.timestamp_unit == "ms" else 1
    return lambda a: parse_seconds(a, divisor=div, fractional=True)


def _with_timestamp_hint(e: MalformedRowsError, mapping: GenericMapping, column: str) -> MalformedRowsError:
    """``e`` with a first sentence on the timestamp column when its values did not parse: the file, the column,
    the count of unparsable values, one of them and the mapping that expected otherwise."""
    report = e.report or {}
    n_bad = (report.get("malformed_by_column") or {}).get(column, {}).get("bad_timestamp", 0)
    if not n_bad:
        return e
    example = next((d.get("value") for d in report.get("first_malformed", [])
                    if d.get("column") == column and d.get("reason") == "bad_timestamp"), None)
    head = (f"{e.path}: {n_bad:,} of {report.get('rows_total', 0):,} values of timestamp column {column!r} do not "
            f"parse under the mapping's {mapping.timestamp_text()}"
            + (f", e.g. {example!r}" if example is not None else "") + ". ")
    return MalformedRowsError(head + str(e), path=e.path, report=e.report)


def _order_ties(table: pa.Table, tie: pa.ChunkedArray) -> pa.Table:
    """``table`` ordered by (user, timestamp, ``tie``, file order); ``tie`` is compared as numbers when every
    present value is one (int64 for integers, else float64), else as text; nulls last."""
    present = pc.drop_null(tie)
    if len(present) and pc.all(pc.match_substring_regex(present, _INT_RE)).as_py():
        try:
            tie = pc.cast(tie, pa.int64())
        except (pa.ArrowInvalid, OverflowError):  # beyond int64: compare as decimals
            tie = pc.cast(tie, pa.float64())
    elif len(present) and pc.all(pc.match_substring_regex(present, _NUMBER_RE)).as_py():
        tie = pc.cast(tie, pa.float64())
    keyed = table.append_column("__tie", tie).append_column("__row", pa.array(np.arange(table.num_rows)))
    keys = [(name, "ascending", "at_end") for name in (USER, TIMESTAMP, "__tie", "__row")]
    order = pc.sort_indices(keyed, options=pc.SortOptions(sort_keys=keys))
    return table.take(order)
