"""CIKM 2019 EComm AI: a round folder with ``user_behavior.csv`` and, optionally, ``item.csv`` (category, shop,
brand per item) and ``user.csv`` (gender, age, purchase level), all without header rows.

``userID,itemID,behavior,timestamp``; behavior pv / cart / fav / buy; timestamps are seconds after
``CIKM2019_BASE`` (2019-07-05 00:00 at UTC+8).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from components.data.readers.parsing import parse_seconds, parse_text
from components.data.readers.streaming import (_behavior_field, _Field, _in_folder, _int_field, _optional_file,
                                               read_csv_file)
from components.data.readers.tables import _column, _empty_profiles, _interactions, _profiles
from components.data.schema import ITEM, TIMESTAMP, USER

BEHAVIORS = ("click", "cart", "fav", "buy")
#: 2019-07-05 00:00 at UTC+8: CIKM 2019 timestamps are seconds after this instant.
CIKM2019_BASE = 1_562_256_000


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    path = _in_folder(raw, ("user_behavior.csv",), "cikm2019")
    names = BEHAVIORS
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
