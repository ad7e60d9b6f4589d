"""IJCAI-15 Tmall repeat buyers (Tianchi dataset 42): a folder with ``user_log_format1.csv`` (or the
``user_log_sample.csv`` name) and, optionally, ``user_info_format1.csv`` / ``user_info_sample.csv`` (profiles).

Log header ``user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type``; ids may be written as floats
(``7069.0``) or be empty; time_stamp is MMDD of 2014 (a day at UTC+8); action_type 0 click, 1 cart, 2 buy, 3 fav.
Profiles ``user_id,age_range,gender`` as float codes decoded through ``IJCAI15_AGE_BANDS`` / ``IJCAI15_GENDERS``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from components.data.readers.parsing import _UNKNOWN, parse_decode, parse_mmdd_2014
from components.data.readers.streaming import _Field, _in_folder, _int_field, _optional_file, read_csv_file
from components.data.readers.tables import _empty_profiles, _interactions, _profiles
from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER

BEHAVIORS = ("click", "cart", "fav", "buy")
IJCAI15_AGE_BANDS = {1: "<18", 2: "18-24", 3: "25-29", 4: "30-34", 5: "35-39", 6: "40-49", 7: ">=50", 8: ">=50"}
IJCAI15_GENDERS = {0: "female", 1: "male"}


def _code_lookup(table: dict[int, str], none_codes: tuple[int, ...]) -> Callable[[str], Any]:
    """Decode float-or-int text codes (``6.0`` or ``6``) through ``table``; ``none_codes`` mean unknown."""

    def lookup(v: str) -> Any:
        try:
            f = float(v)
        except ValueError:
            return _UNKNOWN
        if not math.isfinite(f) or not f.is_integer():
            return _UNKNOWN
        code = int(f)
        if code in none_codes:
            return None
        return table.get(code, _UNKNOWN)

    return lookup


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    log = _in_folder(raw, ("user_log_format1.csv", "user_log_sample.csv"), "ijcai15")
    names = BEHAVIORS
    # action_type: 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite
    action = _code_lookup({0: names.index("click"), 1: names.index("cart"), 2: names.index("buy"),
                           3: names.index("fav")}, ())
    wanted = [
        _int_field(USER, "user_id"), _int_field(ITEM, "item_id"),
        _int_field("category_id", "cat_id", required=False, float_text=True, optional_column=True),
        _int_field("seller_id", ("seller_id", "merchant_id"), required=False, float_text=True,
                   optional_column=True),
        _int_field("brand_id", "brand_id", required=False, float_text=True, optional_column=True),
        _Field(TIMESTAMP, ("time_stamp", "time_tamp"), parse_mmdd_2014),
        _Field(BEHAVIOR, ("action_type",), lambda a: parse_decode(a, action, pa.int8(), required=True,
                                                                  unknown_reason="unknown_behavior"),
               dictionary=True),
    ]
    chunks, rep = read_csv_file(log, wanted, role="interactions", tolerance=tol, block_size=block)
    reports = [rep]
    profiles = _empty_profiles(pa.int64())
    info = _optional_file(log.parent, ("user_info_format1.csv", "user_info_sample.csv")) if raw.is_dir() else None
    if info is not None:
        age = _code_lookup(IJCAI15_AGE_BANDS, (0,))
        gender = _code_lookup(IJCAI15_GENDERS, (2,))
        pw = [
            _int_field(USER, "user_id", float_text=True),
            _Field("age_range", ("age_range",), lambda a: parse_decode(a, age, pa.string(), required=False,
                                                                       unknown_reason="unknown_code"),
                   dictionary=True),
            _Field("gender", ("gender",), lambda a: parse_decode(a, gender, pa.string(), required=False,
                                                                 unknown_reason="unknown_code"), dictionary=True),
        ]
        pchunks, prep = read_csv_file(info, pw, role="profiles", tolerance=tol, block_size=block)
        profiles = _profiles(pchunks)
        reports.append(prep)
    return _interactions(chunks, names), profiles, reports
