"""MovieLens-1M (and any MovieLens-style RecBole dataset): a folder (or one of its files) holding either RecBole
atomic files or the GroupLens ``ratings.dat`` (and, optionally, ``users.dat``; ``::``-separated, integer ids).

RecBole atomic files: ``<name>.inter`` and, optionally, ``<name>.user`` (tab-separated, RecBole's ``field:type``
header such as ``user_id:token item_id:token rating:float timestamp:float``; ids kept as text).  In a folder the
interactions file is ``ml-1m.inter``, else ``<folder name>.inter`` (``ml-100k/ml-100k.inter``), else the folder's
only ``*.inter`` file; several other ``.inter`` files (RecBole's ``.train.inter`` / ``.test.inter`` splits) need
``raw_path`` to name the one to read.

Ratings are read as behavior levels: 1-2 ``rating_low``, 3 ``rating_mid``, 4-5 ``rating_high``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from components.data.readers.parsing import _UNKNOWN, parse_decode, parse_seconds, parse_text
from components.data.readers.streaming import (IngestError, _Field, _header, _int_field, _optional_file,
                                               read_csv_file)
from components.data.readers.tables import _empty_profiles, _interactions, _profiles
from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER

#: MovieLens ratings read as behavior levels: 1-2 low, 3 mid, 4-5 high (see data-formats.md).
BEHAVIORS = ("rating_low", "rating_mid", "rating_high")


def _rating_level(v: str) -> Any:
    """MovieLens rating -> behavior level: 1-2 rating_low, 3 rating_mid, 4-5 rating_high (``BEHAVIORS``)."""
    try:
        r = float(v)
    except ValueError:
        return _UNKNOWN
    levels = {1.0: 0, 2.0: 0, 3.0: 1, 4.0: 2, 5.0: 2}
    return levels.get(r, _UNKNOWN)


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    names = BEHAVIORS
    folder = raw if raw.is_dir() else raw.parent
    if not raw.exists():
        raise FileNotFoundError(f"ml1m: path not found: {raw}")
    rating = lambda a: parse_decode(a, _rating_level, pa.int8(), required=True,  # noqa: E731
                                    unknown_reason="unknown_behavior")
    if raw.is_file():  # a file names itself; ml-1m.user and the like stand for their folder
        inter = raw if raw.suffix == ".inter" else None if raw.name == "ratings.dat" else _recbole_inter(folder)
    else:
        inter = _recbole_inter(folder)
    if inter is not None:
        # RecBole atomic files: tab-separated, typed headers ("user_id:token"); ids stay text.
        names_in = _header(inter, "\t", False)
        untyped = [n for n in names_in if ":" not in n]
        if untyped:
            raise IngestError(f"{inter}: not a RecBole atomic file: every header field must be RecBole's "
                              f"'name:type' (e.g. user_id:token, item_id:token, rating:float, timestamp:float); "
                              f"untyped: {untyped[:5]} of header {names_in[:10]}", path=inter)
        by_base = {n.split(":")[0]: n for n in names_in}

        def typed(base: str) -> tuple[str, ...]:
            return (by_base.get(base, base),)

        wanted = [_Field(USER, typed("user_id"), lambda a: parse_text(a, required=True)),
                  _Field(ITEM, typed("item_id"), lambda a: parse_text(a, required=True)),
                  _Field(BEHAVIOR, typed("rating"), rating, dictionary=True),
                  _Field(TIMESTAMP, typed("timestamp"), lambda a: parse_seconds(a, fractional=True))]
        chunks, rep = read_csv_file(inter, wanted, role="interactions", tolerance=tol, block_size=block,
                                    delimiter="\t")
        reports = [rep]
        profiles = _empty_profiles(pa.string())
        user_file = _optional_file(inter.parent, (inter.stem + ".user",))
        if user_file is not None:
            ub = {n.split(":")[0]: n for n in _header(user_file, "\t", False)}
            uw = [_Field(USER, (ub.get("user_id", "user_id"),), lambda a: parse_text(a, required=True))]
            uw += [_Field(c, (ub.get(c, c),), lambda a: parse_text(a, strip_float_zero=True), required=False)
                   for c in ("age", "gender", "occupation")]
            uchunks, urep = read_csv_file(user_file, uw, role="profiles", tolerance=tol, block_size=block,
                                          delimiter="\t")
            reports.append(urep)
            profiles = _profiles(uchunks)
        return _interactions(chunks, names), profiles, reports
    ratings = raw if raw.is_file() and raw.name == "ratings.dat" else _optional_file(folder, ("ratings.dat",))
    if ratings is None:
        present = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"ml1m: {folder} holds no RecBole atomic interactions file (<name>.inter, e.g. ml-100k/ml-100k.inter: "
            f"tab-separated, header 'user_id:token item_id:token rating:float timestamp:float') and no GroupLens "
            f"ratings.dat; files there: {present[:20]}" + (f" (+{len(present) - 20} more)" if len(present) > 20
                                                           else ""))
    # GroupLens "::" separator read as ":" with empty fields in between (f1, f3, f5 are always empty).
    cols = [f"f{i}" for i in range(7)]
    wanted = [_int_field(USER, "f0"), _int_field(ITEM, "f2"), _Field(BEHAVIOR, ("f4",), rating, dictionary=True),
              _Field(TIMESTAMP, ("f6",), parse_seconds)]
    chunks, rep = read_csv_file(ratings, wanted, role="interactions", tolerance=tol, block_size=block,
                                column_names=cols, delimiter=":",
                                labels={"f0": "UserID", "f2": "MovieID", "f4": "Rating", "f6": "Timestamp"})
    reports = [rep]
    profiles = _empty_profiles(pa.int64())
    users = _optional_file(ratings.parent, ("users.dat",))
    if users is not None:
        uw = [_int_field(USER, "f0"),
              _Field("gender", ("f2",), lambda a: parse_text(a)),
              _Field("age", ("f4",), lambda a: parse_text(a, strip_float_zero=True)),
              _Field("occupation", ("f6",), lambda a: parse_text(a, strip_float_zero=True))]
        uchunks, urep = read_csv_file(users, uw, role="profiles", tolerance=tol, block_size=block,
                                      column_names=[f"f{i}" for i in range(9)], delimiter=":",
                                      labels={"f0": "UserID", "f2": "Gender", "f4": "Age", "f6": "Occupation",
                                              "f8": "Zip-code"})
        reports.append(urep)
        profiles = _profiles(uchunks)
    return _interactions(chunks, names), profiles, reports


def _recbole_inter(folder: Path) -> Path | None:
    """The RecBole interactions file of ``folder`` (see the module docstring), or None when it has none."""
    named = _optional_file(folder, ("ml-1m.inter", f"{folder.name}.inter"))
    if named is not None:
        return named
    inters = sorted(p for p in folder.glob("*.inter") if p.is_file())
    if len(inters) > 1:
        raise IngestError(f"ml1m: {folder} holds several RecBole .inter files {[p.name for p in inters]} and none "
                          f"is named {folder.name}.inter; set raw_path to the file to read", path=folder)
    return inters[0] if inters else None
