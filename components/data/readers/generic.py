"""Generic: any CSV or Parquet interactions file, read through a :class:`GenericMapping` that names its columns.

Ids are int64 when every value is a canonical integer, else text; timestamps are Unix seconds, milliseconds or
ISO-8601 text; the behavior column is optional (without it every row is the single behavior ``interact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.data.readers.parsing import parse_id_auto, parse_iso, parse_seconds
from components.data.readers.streaming import (IngestError, _behavior_field, _check_file, _Field,
                                               _first_line_fields, read_csv_file, read_parquet_file)
from components.data.readers.tables import OPTIONAL_ID_COLUMNS, _empty_profiles, _interactions
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
            return BEHAVIORS
        return tuple(dict.fromkeys(self.behavior_values.values()))

    @staticmethod
    def vocabulary_of(mapping: "GenericMapping | dict | None") -> tuple[str, ...]:
        """The vocabulary a mapping gives, read from a config's raw dict without validating the rest of it."""
        if isinstance(mapping, GenericMapping):
            return mapping.vocabulary()
        values = (mapping or {}).get("behavior_values")
        return tuple(dict.fromkeys(values.values())) if values else BEHAVIORS


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
