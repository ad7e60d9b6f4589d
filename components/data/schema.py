"""The canonical tables every reader produces and every later stage consumes.

Interactions (one row per event, in file order):

=============  ==========================================  =========================================
column         arrow type                                  meaning
=============  ==========================================  =========================================
user_id        int64 or string                             original user id
item_id        int64 or string                             original item id
behavior       dictionary<int8, string>                    behavior name, e.g. click / cart / fav / buy
timestamp      int64                                       Unix seconds, UTC
category_id    int64 or string, nullable (optional)        item category
seller_id      int64 or string, nullable (optional)        seller / shop
brand_id       int64 or string, nullable (optional)        brand
=============  ==========================================  =========================================

Profiles (one row per user, may have zero rows): ``user_id`` plus categorical fields stored as nullable
strings (null = unknown).  Every dataset's behavior vocabulary is fixed up front (its format's ``BEHAVIORS``,
listed in ``components/data/readers/registry.py``), so record batches of one file share one dictionary and
concatenate without re-encoding.
"""

from __future__ import annotations

import pyarrow as pa

USER, ITEM, BEHAVIOR, TIMESTAMP = "user_id", "item_id", "behavior", "timestamp"
REQUIRED_COLUMNS = (USER, ITEM, BEHAVIOR, TIMESTAMP)

BEHAVIOR_TYPE = pa.dictionary(pa.int8(), pa.string())


def behavior_array(codes: pa.Array, names: tuple[str, ...]) -> pa.DictionaryArray:
    """Wrap int8 codes (0-based indices into ``names``) as the canonical behavior column."""
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), pa.array(list(names), pa.string()))


def check_canonical(table: pa.Table, *, where: str = "interactions") -> None:
    """Raise ``ValueError`` naming the missing or mistyped columns of a canonical interactions table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{where}: missing canonical column(s) {missing}; have {table.column_names}")
    problems = []
    for col in (USER, ITEM):
        t = table.schema.field(col).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            problems.append(f"{col} has type {t}, expected int64 or string")
    if table.schema.field(BEHAVIOR).type != BEHAVIOR_TYPE:
        problems.append(f"behavior has type {table.schema.field(BEHAVIOR).type}, expected {BEHAVIOR_TYPE}")
    if not pa.types.is_integer(table.schema.field(TIMESTAMP).type):
        problems.append(f"timestamp has type {table.schema.field(TIMESTAMP).type}, expected int64 seconds")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
