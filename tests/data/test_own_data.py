"""Own data without conversion scripts: strftime timestamps (with a default year), a tie-break column, the
"user item item ..." text format, any RecBole atomic folder for the ml1m reader, and the split's warning when most
users turn cold.  Small files are written here; the day-level stamps are also checked on the real IJCAI-15 slice."""

from __future__ import annotations

import csv
import logging
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from components.data.clean import CleanConfig, clean_interactions
from components.data.readers import GenericMapping, IngestError, MalformedRowsError, read_dataset
from components.data.readers.parsing import parse_strftime
from components.data.readers.registry import FORMATS
from components.data.schema import behavior_array
from components.data.split import SplitConfig, build_sequences

REPO = Path(__file__).resolve().parents[2]
IJCAI_ACTIONS = {"0": "click", "1": "cart", "3": "fav", "2": "buy"}
DAY = 86_400


def _ijcai_rows(folder: Path) -> list[dict]:
    with open(folder / "user_log_sample.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _mapping(**extra) -> dict:
    return {"user_id": "user_id", "item_id": "item_id", "timestamp": "time_stamp", "behavior": "action_type",
            "behavior_values": IJCAI_ACTIONS, **extra}


# ----------------------------------------------------------------------------------------------- timestamp_format


def test_strftime_parser_values_rollover_and_unpadded_text() -> None:
    values, problems = parse_strftime(pa.array(["0101", "0628", "1231", "0229", "0631", "6-4", "", " 0604 "]),
                                      fmt="%m%d", default_year=2014, utc_offset_s=8 * 3600)
    got = values.to_pylist()
    start = 1_388_505_600  # 2014-01-01 00:00 at UTC+8
    assert got[0] == start and got[1] == start + 178 * DAY and got[2] == start + 364 * DAY
    assert got[7] == start + 154 * DAY  # surrounding blanks are trimmed
    reasons = {r: np.flatnonzero(m).tolist() for r, m in problems}
    # 2014 has no Feb 29 and June has no 31st (Arrow alone would roll them over to March 1 / July 1)
    assert reasons == {"missing_value": [6], "bad_timestamp": [3, 4, 5]}
    # Tmall's unpadded month-day, and a full pattern with its own offset
    v, p = parse_strftime(pa.array(["6-4", "06-04", "11-11", "2-29"]), fmt="%m-%d", default_year=2014)
    assert v.to_pylist()[:3] == [1_401_840_000, 1_401_840_000, 1_415_664_000]
    assert [np.flatnonzero(m).tolist() for _, m in p] == [[3]]
    v, p = parse_strftime(pa.array(["2014-06-04 10:00:05+0800"]), fmt="%Y-%m-%d %H:%M:%S%z")
    assert v.to_pylist() == [1_401_847_205] and p == []


def test_ijcai15_day_stamps_through_a_mapping_match_the_ijcai15_reader(shared_datasets: Path, tmp_path: Path
                                                                       ) -> None:
    folder = shared_datasets / "ijcai15_tmall_sample"
    reference = read_dataset("ijcai15", folder).interactions
    mapped = read_dataset("generic", folder / "user_log_sample.csv", mapping=_mapping(
        timestamp_format="%m%d", default_year=2014, utc_offset="+08:00")).interactions
    assert mapped.num_rows == reference.num_rows == 3000
    for col in ("user_id", "item_id", "timestamp"):
        assert mapped[col].to_pylist() == reference[col].to_pylist(), col
    assert mapped["behavior"].to_pylist() == reference["behavior"].to_pylist()
    rows = _ijcai_rows(folder)
    first = rows[0]["time_stamp"]  # "0628"
    cst = timezone(timedelta(hours=8))
    assert mapped["timestamp"][0].as_py() == datetime(2014, int(first[:2]), int(first[2:]), tzinfo=cst).timestamp()

    # The same log as Tmall writes day stamps ("6-4": unpadded, no year), read with "%m-%d": the same times.
    tmall = tmp_path / "tmall.csv"
    with open(tmall, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "time_stamp": f"{int(r['time_stamp'][:2])}-{int(r['time_stamp'][2:])}"})
    assert tmall.read_text().splitlines()[1].split(",")[5] == "6-28"
    again = read_dataset("generic", tmall, mapping=_mapping(timestamp_format="%m-%d", default_year=2014,
                                                           utc_offset="+08:00")).interactions
    assert again["timestamp"].to_pylist() == reference["timestamp"].to_pylist()
    # Without utc_offset the days start at 00:00 UTC, eight hours later.
    utc = read_dataset("generic", tmall, mapping=_mapping(timestamp_format="%m-%d", default_year=2014))
    assert (np.asarray(utc.interactions["timestamp"]) - np.asarray(reference["timestamp"]) == 8 * 3600).all()


def test_a_pattern_that_does_not_fit_is_refused_naming_file_column_count_and_example(shared_datasets: Path,
                                                                                    tmp_path: Path) -> None:
    path = shared_datasets / "ijcai15_tmall_sample" / "user_log_sample.csv"
    with pytest.raises(MalformedRowsError) as err:
        read_dataset("generic", path, mapping=_mapping(timestamp_format="%m-%d", default_year=2014))
    msg = str(err.value)
    assert msg.startswith(f"{path}: 3,000 of 3,000 values of timestamp column 'time_stamp' do not parse")
    first = _ijcai_rows(path.parent)[0]["time_stamp"]
    assert f"timestamp_format '%m-%d', default_year 2014, e.g. '{first}'" in msg
    assert err.value.report["malformed_by_column"]["time_stamp"] == {"bad_timestamp": 3000}

    # One impossible day among 2,000 rows: skipped and reported with its line, within the tolerance.
    lines = ["user,item,day"] + [f"{i % 40},{i % 97},{1 + i % 12:02d}{1 + i % 28:02d}" for i in range(2000)]
    lines[1234] = "5,6,0230"
    small = tmp_path / "days.csv"
    small.write_text("\n".join(lines) + "\n")
    res = read_dataset("generic", small, mapping={"user_id": "user", "item_id": "item", "timestamp": "day",
                                                  "timestamp_format": "%m%d", "default_year": 2015})
    (rep,) = res.report["files"]
    assert res.interactions.num_rows == 1999 and rep["malformed_by_reason"] == {"bad_timestamp": 1}
    assert rep["first_malformed"] == [{"line": 1235, "reason": "bad_timestamp", "column": "day", "value": "0230"}]


@pytest.mark.parametrize("fields, match", [
    ({"timestamp_unit": "s", "timestamp_format": "%m%d", "default_year": 2014}, "mutually exclusive"),
    ({"timestamp_format": "%m%d"}, r"has no year .*set default_year"),
    ({"timestamp_format": "%Y-%m-%d", "default_year": 2014}, "has a year of its own"),
    ({"timestamp_format": "day", "default_year": 2014}, "strftime pattern with directives"),
    ({"timestamp_format": "%m%Q", "default_year": 2014}, "not a pattern Python's strptime reads"),
    ({"timestamp_format": "%m%d", "default_year": "2014"}, "default_year must be a year"),
    ({"timestamp_format": "%m%d", "default_year": 2014, "utc_offset": "8h"}, "utc_offset must look like"),
    ({"timestamp_format": "%Y-%m-%d %H:%M%z", "utc_offset": "+08:00"}, "reads the offset from each value"),
    ({"timestamp_unit": "ms", "default_year": 2014}, "default_year applies to timestamp_format only"),
    ({"timestamp_unit": "days"}, "timestamp_unit must be 's', 'ms' or 'iso'"),
])
def test_mapping_refuses_inconsistent_timestamp_options(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenericMapping.from_any({"user_id": "u", "item_id": "i", "timestamp": "t", **fields})
    assert GenericMapping.from_any({"user_id": "u", "item_id": "i", "timestamp": "t"}).timestamp_unit == "s"


# ----------------------------------------------------------------------------------------------- tie_break


def _write(path: Path, header: str, rows: list[tuple]) -> Path:
    path.write_text("\n".join([header] + [",".join("" if v is None else str(v) for v in r) for r in rows]) + "\n")
    return path


def test_tie_break_orders_same_day_events_then_file_order(tmp_path: Path) -> None:
    # Two users, day-level stamps; "seq" numbers the events of a day (numeric: 10 after 9), one is missing.
    rows = [("a", "i1", "6-4", 10), ("b", "i7", "6-4", 2), ("a", "i2", "6-4", 9), ("a", "i3", "6-3", 50),
            ("a", "i4", "6-4", None), ("a", "i5", "6-4", 9), ("b", "i8", "6-4", 1)]
    path = _write(tmp_path / "log.csv", "user,item,day,seq", rows)
    base = {"user_id": "user", "item_id": "item", "timestamp": "day", "timestamp_format": "%m-%d",
            "default_year": 2014}
    ordered = read_dataset("generic", path, mapping={**base, "tie_break": "seq"}).interactions
    # (user, day, seq, file order): i2 and i5 tie on seq 9 and keep file order; the missing seq comes last.
    assert ordered["item_id"].to_pylist() == ["i3", "i2", "i5", "i1", "i4", "i8", "i7"]
    assert "seq" not in ordered.column_names and "tie_break" not in ordered.column_names
    cleaned = clean_interactions(ordered, CleanConfig())
    names = cleaned.item_ids.to_pylist()
    assert [names[i - 1] for i in cleaned.interactions["item_id"].to_pylist()] == ["i3", "i2", "i5", "i1", "i4",
                                                                                  "i8", "i7"]
    # Without the column, same-day events keep file order through cleaning.
    plain = clean_interactions(read_dataset("generic", path, mapping=base).interactions, CleanConfig())
    names = plain.item_ids.to_pylist()
    assert [names[i - 1] for i in plain.interactions["item_id"].to_pylist()] == ["i3", "i1", "i2", "i4", "i5",
                                                                                "i7", "i8"]


def test_text_tie_break_and_a_missing_tie_break_column(tmp_path: Path) -> None:
    # A time of day as text is compared as text ("09:..." before "10:..."); equal stamps, so only it orders.
    rows = [(1, 100, 1_401_840_000, "10:00:01"), (1, 101, 1_401_840_000, "09:59:59"),
            (1, 102, 1_401_840_000, "10:00:00")]
    path = _write(tmp_path / "log.csv", "u,i,ts,clock", rows)
    t = read_dataset("generic", path, mapping={"user_id": "u", "item_id": "i", "timestamp": "ts",
                                               "tie_break": "clock"}).interactions
    assert t["item_id"].to_pylist() == [101, 102, 100]
    with pytest.raises(IngestError, match=r"missing required column\(s\) \['seq'\]"):
        read_dataset("generic", path, mapping={"user_id": "u", "item_id": "i", "timestamp": "ts",
                                               "tie_break": "seq"})


# ----------------------------------------------------------------------------------------------- sequences as text


def test_sequences_text_one_line_per_user_and_pair_lines_read_alike(tmp_path: Path) -> None:
    per_user = tmp_path / "Beauty.txt"
    per_user.write_text("1 10 11 12\n2 11\t13\n3 12 10 11 14\n")
    pairs = tmp_path / "pairs.txt"  # SASRec's layout: one "user item" pair per line, in time order per user
    pairs.write_text("1 10\n1 11\n2 11\n3 12\n1 12\n2 13\n3 10\n3 11\n3 14\n")
    a = read_dataset("seqtxt", per_user).interactions
    b = read_dataset("seqtxt", pairs).interactions
    assert a["user_id"].to_pylist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert a["item_id"].to_pylist() == [10, 11, 12, 11, 13, 12, 10, 11, 14]
    assert a["timestamp"].to_pylist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert set(a["behavior"].to_pylist()) == {"interact"}
    seq_a = {(u, t): i for u, i, t in zip(*(a[c].to_pylist() for c in ("user_id", "item_id", "timestamp")))}
    seq_b = {(u, t): i for u, i, t in zip(*(b[c].to_pylist() for c in ("user_id", "item_id", "timestamp")))}
    assert seq_a == seq_b
    # the positions survive cleaning as each user's order
    cleaned = clean_interactions(b, CleanConfig())
    items = cleaned.item_ids.to_pylist()
    third = cleaned.interactions.filter(pa.compute.equal(cleaned.interactions["user_id"], 3))
    assert [items[i - 1] for i in third["item_id"].to_pylist()] == ["12", "10", "11", "14"]


def test_sequences_text_malformed_lines_text_ids_and_folders(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("u1 a b\n\nu2\n   \nu3 c\n" + "".join(f"u{k} a c\n" for k in range(4, 40)))
    res = read_dataset("seqtxt", path, max_malformed_fraction=0.1)
    (rep,) = res.report["files"]
    assert rep["blank_lines"] == 1 and rep["malformed_by_column"] == {"sequence": {"too_few_fields": 1,
                                                                                   "missing_value": 1}}
    assert [(d["line"], d["reason"]) for d in rep["first_malformed"]] == [(3, "too_few_fields"), (4, "missing_value")]
    assert res.interactions["user_id"].type == pa.string() and res.interactions.num_rows == 2 + 1 + 2 * 36
    with pytest.raises(MalformedRowsError, match=r"data.txt: .*column 'sequence': missing_value 1, too_few_fields 1"):
        read_dataset("seqtxt", path, max_malformed_fraction=0.01)
    folder = tmp_path / "beauty"
    folder.mkdir()
    (folder / "Beauty.txt").write_text("1 2 3\n")
    assert read_dataset("seqtxt", folder).interactions.num_rows == 2
    (folder / "Beauty_sample.txt").write_text("1 2\n")
    with pytest.raises(IngestError, match=r"exactly one \*\.txt file .*\['Beauty.txt', 'Beauty_sample.txt'\]"):
        read_dataset("seqtxt", folder)


def test_sequences_text_config_runs_the_data_stages(tmp_path: Path) -> None:
    """configs/seqtxt.yaml through ingest -> validate -> clean -> split on a generated FMLP-Rec-style file."""
    from components.data.prepare import sequences_from_config

    assert FORMATS["seqtxt"].history_items == "excluded" and FORMATS["seqtxt"].behaviors == ("interact",)
    # 65 users with 12 distinct items each over 130 items (6 events an item): every user and item passes the
    # 5-core and keeps 118 never-touched items for its 100 negatives.  Item ids are shuffled, user ids not in order.
    rng = random.Random(5)
    names = [f"B{n:05d}" for n in rng.sample(range(10_000, 99_999), 130)]
    users = rng.sample(range(1, 1000), 65)
    lines = [" ".join([str(u)] + [names[(j * 12 + k) % 130] for k in range(12)]) for j, u in enumerate(users)]
    path = tmp_path / "Beauty.txt"
    path.write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((REPO / "configs" / "seqtxt.yaml").read_text())
    data = sequences_from_config(config, raw_path=path)
    assert data.meta["cold_mode"] == "natural" and data.meta["n_cold_tune_users"] == 0
    assert data.meta["warnings"] == [] and data.behavior_names == ["interact"]
    assert data.n_users == 65 and data.n_items == 130 and data.meta["targets"]["test"] == 65
    # each user's last item is its test target, its 11th the validation target
    test = data.targets["test"]
    by_user = {int(data.user_ids[u]): data.item_ids[i] for u, i in zip(test.users, test.items)}
    assert by_user == {u: names[(j * 12 + 11) % 130] for j, u in enumerate(users)}


# ----------------------------------------------------------------------------------------------- ml1m: RecBole folders


def _write_recbole(folder: Path, name: str, n_users: int = 12) -> list[tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(str(u), str(100 + (u * 7 + k) % 30), str(1 + (u + k) % 5), str(874_000_000 + u * 1000 + k))
            for u in range(1, n_users + 1) for k in range(6)]
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                          + "".join("\t".join(r) + "\n" for r in rows))
    (folder / f"{name}.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\t"
                                         "zip_code:token\n"
                                         + "".join(f"{u}\t{20 + u}\t{'MF'[u % 2]}\twriter\t0{u}\n"
                                                   for u in range(1, n_users + 1)))
    return rows


def test_ml1m_reads_any_recbole_atomic_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    rows = _write_recbole(folder, "ml-100k")
    res = read_dataset("ml1m", folder)
    t = res.interactions
    assert t["user_id"].to_pylist() == [r[0] for r in rows] and t["item_id"].to_pylist() == [r[1] for r in rows]
    levels = {"1": "rating_low", "2": "rating_low", "3": "rating_mid", "4": "rating_high", "5": "rating_high"}
    assert t["behavior"].to_pylist() == [levels[r[2]] for r in rows]
    assert t["timestamp"].to_pylist() == [int(r[3]) for r in rows]
    assert res.profiles.num_rows == 12 and res.profiles["gender"].to_pylist()[:2] == ["F", "M"]
    assert res.profiles["age"].to_pylist()[:2] == ["21", "22"]
    # RecBole's benchmark split files beside it do not get in the way: <folder name>.inter wins
    (folder / "ml-100k.train.inter").write_text((folder / "ml-100k.inter").read_text())
    assert read_dataset("ml1m", folder).interactions.num_rows == len(rows)
    # a folder whose only .inter file has another name is read too
    other = tmp_path / "ratings"
    _write_recbole(other, "ml-100k")
    assert read_dataset("ml1m", other).interactions.num_rows == len(rows)


def test_ml1m_says_what_it_expected(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "README").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"holds no RecBole atomic interactions file \(<name>\.inter, e\.g\. "
                                                r"ml-100k/ml-100k\.inter.*ratings\.dat; files there: \['README'\]"):
        read_dataset("ml1m", empty)
    several = tmp_path / "several"
    _write_recbole(several, "a")
    _write_recbole(several, "b")
    with pytest.raises(IngestError, match=r"several RecBole \.inter files \['a.inter', 'b.inter'\].*several\.inter"):
        read_dataset("ml1m", several)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "plain.inter").write_text("user_id\titem_id\trating\ttimestamp\n1\t2\t3\t4\n")
    with pytest.raises(IngestError, match=r"not a RecBole atomic file: .*'name:type'.*untyped: \['user_id'"):
        read_dataset("ml1m", plain)


# ----------------------------------------------------------------------------------------------- mostly cold


def _clean_log(events_per_user: list[int]) -> object:
    users, items, ts = [], [], []
    for u, n in enumerate(events_per_user, start=1):
        for k in range(n):
            users.append(u)
            items.append(1 + (u * 3 + k) % 50)
            ts.append(1000 * u + k)
    t = pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                  "behavior": behavior_array(pa.array([0] * len(users), pa.int8()), ("interact",)),
                  "timestamp": pa.array(ts, pa.int64())})
    return clean_interactions(t, CleanConfig())


def test_split_warns_with_counts_when_most_users_turn_cold(caplog: pytest.LogCaptureFixture) -> None:
    # 20 users with 12 events, 60 with 6: PPR's threshold of 10 makes 60 of 80 cold (as Amazon Beauty's 77%)
    cleaned = _clean_log([12] * 20 + [6] * 60)
    with caplog.at_level(logging.WARNING, logger="components.data.split"):
        data = build_sequences(cleaned, None, SplitConfig(cold_threshold=10, cold_mode="natural", n_negatives=5,
                                                          history_items="candidates"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "components.data.split"]
    assert len(warned) == 1
    msg = warned[0].getMessage()
    assert "60 of 80 users (75.0%) are cold" in msg and "only 20 warm users pre-train" in msg
    assert "cold_threshold=10" in msg and "settings.cold_threshold" in msg
    assert data.meta["warnings"] == [msg]
    assert data.meta["n_cold_tune_users"] + data.meta["n_cold_test_users"] == 60

    # 40 of 80 cold is not "most": no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="components.data.split"):
        data = build_sequences(_clean_log([12] * 40 + [6] * 40), None,
                               SplitConfig(cold_threshold=10, cold_mode="natural", n_negatives=5,
                                           history_items="candidates"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and data.meta["warnings"] == []
