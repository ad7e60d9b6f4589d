"""Assembly: the per-column chunks a reader streamed -> the canonical interactions and profiles tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER, check_canonical

OPTIONAL_ID_COLUMNS = ("category_id", "seller_id", "brand_id")


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
