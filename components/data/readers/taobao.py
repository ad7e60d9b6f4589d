"""Taobao UserBehavior (Tianchi dataset 649): ``UserBehavior.csv`` or its folder.

No header; ``user_id,item_id,category_id,behavior_type,timestamp``; behavior_type pv / cart / fav / buy; Unix
seconds.  No user profiles.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from components.data.readers.parsing import parse_seconds
from components.data.readers.streaming import _behavior_field, _Field, _in_folder, _int_field, read_csv_file
from components.data.readers.tables import _empty_profiles, _interactions
from components.data.schema import ITEM, TIMESTAMP, USER

BEHAVIORS = ("click", "cart", "fav", "buy")


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    path = _in_folder(raw, ("UserBehavior.csv",), "taobao")
    names = BEHAVIORS
    codes = {"pv": 0, "cart": 1, "fav": 2, "buy": 3}
    assert [names[c] for c in codes.values()] == ["click", "cart", "fav", "buy"]
    wanted = [_int_field(USER, "user_id"), _int_field(ITEM, "item_id"),
              _int_field("category_id", "category_id", required=False),
              _behavior_field("behavior_type", codes), _Field(TIMESTAMP, ("timestamp",), parse_seconds)]
    chunks, rep = read_csv_file(path, wanted, role="interactions", tolerance=tol, block_size=block,
                                column_names=["user_id", "item_id", "category_id", "behavior_type", "timestamp"])
    return _interactions(chunks, names), _empty_profiles(pa.int64()), [rep]
