"""Readers: raw dataset files -> the canonical interactions and profiles tables (see ``components/data/schema.py``).

One entry point, :func:`read_dataset`; the package in layers, each importing only the ones above it:

* ``parsing``: column parsers (one batch column of raw text -> compact values + the masks of bad rows);
* ``streaming``: one CSV / Parquet file streamed in record batches through those parsers, with malformed-row
  accounting (counts by column and reason, the first five bad rows with their line numbers, the tolerance
  ``max_malformed_fraction`` and :class:`MalformedRowsError` past it) and the ingest errors;
* ``tables``: the streamed chunks -> the canonical tables;
* one file per format, named after its dataset: which files, which columns, which codes (its docstring describes
  the raw layout);
* ``registry``: the one list of formats (``FORMATS``), with each dataset's behavior vocabulary and split default.
  Every other list of datasets derives from it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from components.data.readers.cikm2019 import CIKM2019_BASE
from components.data.readers.generic import GenericMapping
from components.data.readers.ijcai15 import IJCAI15_AGE_BANDS, IJCAI15_GENDERS
from components.data.readers.parsing import (IJCAI15_YEAR_START, Problems, parse_decode, parse_id_auto, parse_int,
                                             parse_iso, parse_mmdd_2014, parse_seconds, parse_temporal, parse_text)
from components.data.readers.registry import DATASETS, FORMATS, DatasetFormat, format_for
from components.data.readers.streaming import (EmptyInputError, IngestError, MalformedRowsError, MissingColumnError,
                                               _InvalidRowHandler, read_csv_file, read_parquet_file)
from components.data.readers.tables import OPTIONAL_ID_COLUMNS, _behavior_counts

__all__ = [
    "CIKM2019_BASE", "DATASETS", "FORMATS", "IJCAI15_AGE_BANDS", "IJCAI15_GENDERS", "IJCAI15_YEAR_START",
    "OPTIONAL_ID_COLUMNS", "DatasetFormat", "EmptyInputError", "GenericMapping", "IngestError", "IngestResult",
    "MalformedRowsError", "MissingColumnError", "Problems", "format_for", "parse_decode", "parse_id_auto",
    "parse_int", "parse_iso", "parse_mmdd_2014", "parse_seconds", "parse_temporal", "parse_text", "read_csv_file",
    "read_dataset", "read_parquet_file", "_InvalidRowHandler",
]

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    interactions: pa.Table  # canonical (schema.check_canonical passes)
    profiles: pa.Table  # user_id + nullable string fields; zero rows if the dataset has none
    report: dict  # JSON-able, see read_dataset


def read_dataset(dataset: str, raw_path: str | Path, *, mapping: GenericMapping | dict | None = None,
                 max_malformed_fraction: float = 0.001, block_size: int = 16 << 20) -> IngestResult:
    """Read one raw dataset into the canonical tables.

    ``dataset``: a name in ``registry.FORMATS``.  ``raw_path``: the file or folder its format module's docstring
    describes (see also ``data-formats.md``).  ``mapping``: only for a format read through a column mapping
    (``DatasetFormat.mapping``), as that class or a dict.  Malformed rows are skipped and reported while
    malformed / total <= ``max_malformed_fraction`` (per file); past it :class:`MalformedRowsError`.
    ``block_size`` is the CSV reader's block in bytes (one record batch each).

    The report holds, per file, rows_total / rows_good / malformed / blank_lines, counts by reason and by column,
    the first 5 malformed rows (line, reason, column, value); and for the dataset the behavior counts.
    """
    fmt = format_for(dataset)
    if not 0.0 <= max_malformed_fraction <= 1.0:
        raise ValueError(f"max_malformed_fraction must be in [0, 1], got {max_malformed_fraction}")
    raw = Path(raw_path)
    if not raw.exists():
        raise FileNotFoundError(f"{dataset}: raw path not found: {raw}")
    started = time.perf_counter()
    if fmt.mapping is None:
        if mapping is not None:
            mapped = ", ".join(repr(f.name) for f in FORMATS.values() if f.mapping is not None)
            raise ValueError(f"mapping is only used with dataset {mapped}, not {dataset!r}")
        interactions, profiles, files = fmt.read(raw, max_malformed_fraction, block_size)
    else:
        mapping = fmt.mapping.from_any(mapping)
        interactions, profiles, files = fmt.read(raw, max_malformed_fraction, block_size, mapping)
    vocab = fmt.vocabulary(mapping)
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
