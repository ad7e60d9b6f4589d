"""RetailRocket (Kaggle "Retailrocket recommender system dataset"): ``events.csv`` or the folder holding it.

Header ``timestamp,visitorid,event,itemid,transactionid``; timestamp in milliseconds since the epoch (read as Unix
seconds, rounded down like every other reader); event ``view`` / ``addtocart`` / ``transaction``, read as click /
cart / buy.  An event name outside these three is a malformed row (``unknown_behavior``), counted and reported
like any other.  ``transactionid`` (set on transactions only) is not read: the canonical tables have no column for
it.  The dataset's optional other files (``item_properties_part1.csv`` / ``item_properties_part2.csv``: timestamped
item properties such as the category; ``category_tree.csv``) are ignored, so items carry no category here.  No
user profiles.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from components.data.readers.parsing import parse_seconds
from components.data.readers.streaming import _behavior_field, _Field, _in_folder, _int_field, read_csv_file
from components.data.readers.tables import _empty_profiles, _interactions
from components.data.schema import ITEM, TIMESTAMP, USER

BEHAVIORS = ("click", "cart", "buy")
#: Raw event name -> canonical behavior name.
EVENTS = {"view": "click", "addtocart": "cart", "transaction": "buy"}


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    path = _in_folder(raw, ("events.csv",), "retailrocket")
    codes = {event: BEHAVIORS.index(name) for event, name in EVENTS.items()}
    wanted = [_int_field(USER, "visitorid"), _int_field(ITEM, "itemid"), _behavior_field("event", codes),
              _Field(TIMESTAMP, ("timestamp",), lambda a: parse_seconds(a, divisor=1_000))]
    chunks, rep = read_csv_file(path, wanted, role="interactions", tolerance=tol, block_size=block)
    return _interactions(chunks, BEHAVIORS), _empty_profiles(pa.int64()), [rep]
