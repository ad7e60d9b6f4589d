"""The RetailRocket reader on generated ``events.csv`` files, and the dataset registry as the one list of datasets.

Expected values are computed here from the rows the test writes (its own event table, ``ms // 1000``), never from
the reader.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from components.data import datasets, schema
from components.data.clean import CleanConfig, clean_interactions
from components.data.datasets import behaviors_for, default_history_items
from components.data.readers import EmptyInputError, MalformedRowsError, MissingColumnError, read_dataset
from components.data.readers.registry import DATASETS, FORMATS
from components.data.schema import BEHAVIOR_TYPE, check_canonical
from components.data.split import SplitConfig, build_sequences

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HEADER = "timestamp,visitorid,event,itemid,transactionid"
#: The Kaggle event names and what they mean here, spelled out again independently of the reader.
EVENTS = {"view": "click", "addtocart": "cart", "transaction": "buy"}
START_MS = 1_430_622_004_384  # 2015-05-03, the start of the published log


def write_events(path: Path, n_rows: int = 300, n_users: int = 8, n_items: int = 40, seed: int = 0,
                 weights: tuple[int, int, int] = (80, 14, 6)) -> list[dict]:
    """A Kaggle-layout ``events.csv`` in random time order (as the published file is), every row at a distinct
    second with a millisecond part; returns the rows as written (file order)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = rng.sample(range(0, 120 * 86_400), n_rows)
    users = rng.sample(range(1, 1_407_580), n_users)
    items = rng.sample(range(1, 466_868), n_items)
    rows, lines, txn = [], [HEADER], 0
    for sec in seconds:
        ms = START_MS + sec * 1_000 + rng.randint(0, 999)
        event = rng.choices(list(EVENTS), weights=weights)[0]
        user, item = rng.choice(users), rng.choice(items)
        tid = ""
        if event == "transaction":
            txn += 1
            tid = str(txn)
        lines.append(f"{ms},{user},{event},{item},{tid}")
        rows.append({"ms": ms, "user": user, "event": event, "item": item})
    path.write_text("\n".join(lines) + "\n")
    return rows


def expected(rows: list[dict]) -> dict[str, list]:
    return {"user_id": [r["user"] for r in rows], "item_id": [r["item"] for r in rows],
            "behavior": [EVENTS[r["event"]] for r in rows], "timestamp": [r["ms"] // 1000 for r in rows]}


def _replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- reading


def test_generated_events_read_back_with_one_malformed_row(tmp_path: Path) -> None:
    folder = tmp_path / "retailrocket"
    rows = write_events(folder / "events.csv", n_rows=300, seed=1)
    assert {r["event"] for r in rows} == set(EVENTS)
    bad_line = 101  # the 100th data row (line 1 is the header)
    bad = rows.pop(bad_line - 2)
    _replace_line(folder / "events.csv", bad_line, f"{bad['ms']},{bad['user']},remove_from_cart,{bad['item']},")

    res = read_dataset("retailrocket", folder, max_malformed_fraction=0.01, block_size=2048)  # several batches
    t = res.interactions
    check_canonical(t)
    assert t.schema.field("user_id").type == pa.int64() and t.schema.field("item_id").type == pa.int64()
    assert t.schema.field("behavior").type == BEHAVIOR_TYPE and t.schema.field("timestamp").type == pa.int64()
    assert t.column("user_id").num_chunks > 1
    assert t.to_pydict() == expected(rows)
    assert t.column("behavior").chunk(0).dictionary.to_pylist() == ["click", "cart", "buy"]
    assert res.report["behavior_counts"] == dict(Counter(EVENTS[r["event"]] for r in rows))
    assert res.report["behavior_vocabulary"] == ["click", "cart", "buy"]
    f = res.report["files"][0]
    assert f["file"] == str(folder / "events.csv")
    assert (f["rows_total"], f["rows_good"], f["malformed"]) == (300, 299, 1)
    assert f["malformed_by_column"] == {"event": {"unknown_behavior": 1}}
    assert f["first_malformed"] == [{"line": bad_line, "reason": "unknown_behavior", "column": "event",
                                     "value": "remove_from_cart"}]
    assert res.profiles.num_rows == 0 and res.profiles.schema.field("user_id").type == pa.int64()
    # The file itself works as well as its folder.
    assert read_dataset("retailrocket", folder / "events.csv", max_malformed_fraction=0.01).interactions.equals(t)
    # At the default tolerance (0.1%) one bad row in 300 is too many.
    with pytest.raises(MalformedRowsError, match="remove_from_cart"):
        read_dataset("retailrocket", folder)


def test_too_many_malformed_rows_name_the_file_column_count_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = write_events(path, n_rows=400, seed=2)
    bad_lines = list(range(2, 402, 25))  # 16 of 400 rows = 4%
    for line in bad_lines:
        r = rows[line - 2]
        _replace_line(path, line, f"2015-06-01 10:00:00,{r['user']},{r['event']},{r['item']},")
    with pytest.raises(MalformedRowsError) as err:
        read_dataset("retailrocket", path, max_malformed_fraction=0.01)
    msg = str(err.value)
    assert str(path) in msg and "'timestamp'" in msg and f"not_an_integer {len(bad_lines)}" in msg
    assert f"{len(bad_lines)} of 400" in msg and "max_malformed_fraction=0.01" in msg
    assert f"line {bad_lines[0]} " in msg and "2015-06-01 10:00:00" in msg
    assert err.value.path == str(path)
    assert err.value.report["malformed_by_column"] == {"timestamp": {"not_an_integer": len(bad_lines)}}


def test_missing_column_file_and_empty_input(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,transactionid\n1430622004384,1,view,\n")
    with pytest.raises(MissingColumnError) as err:
        read_dataset("retailrocket", path)
    assert str(path) in str(err.value) and "'itemid'" in str(err.value) and "'visitorid'" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="events.csv"):
        read_dataset("retailrocket", tmp_path / "empty")
    header_only = tmp_path / "header" / "events.csv"
    header_only.parent.mkdir()
    header_only.write_text(HEADER + "\n")
    with pytest.raises(EmptyInputError, match="header only"):
        read_dataset("retailrocket", header_only.parent)
    with pytest.raises(ValueError, match="mapping is only used"):
        read_dataset("retailrocket", header_only, mapping={"user_id": "visitorid"})


def test_events_flow_through_clean_and_split(tmp_path: Path) -> None:
    """Read -> clean -> split: warm and cold users and each warm user's test target follow from the written rows."""
    rows = write_events(tmp_path / "events.csv", n_rows=400, n_users=10, n_items=60, seed=3, weights=(60, 20, 20))
    res = read_dataset("retailrocket", tmp_path)
    cleaned = clean_interactions(res.interactions, CleanConfig())
    assert cleaned.interactions.num_rows == len(rows)  # distinct seconds: no duplicate to drop
    threshold = 8
    d = build_sequences(cleaned, None, SplitConfig(target_behaviors=["buy"], cold_threshold=threshold,
                                                   cold_mode="natural", n_negatives=20, seed=0),
                        dataset="retailrocket")
    assert d.meta["history_items"] == "candidates" and d.behavior_names == ["click", "cart", "buy"]
    buys: dict[int, list[dict]] = {}
    for r in rows:
        if r["event"] == "transaction":
            buys.setdefault(r["user"], []).append(r)
    warm = {u for u, b in buys.items() if len(b) >= threshold}
    cold = {u for u, b in buys.items() if len(b) < threshold}
    assert warm and cold
    assert {int(d.user_ids[u]) for u in d.warm_users} == warm
    assert {int(d.user_ids[u]) for u in [*d.cold_tune_users, *d.cold_test_users]} == cold
    test = d.targets["test"]
    got = {int(d.user_ids[u]): int(d.item_ids[i]) for u, i in zip(test.users, test.items)}
    assert got == {u: max(buys[u], key=lambda r: r["ms"])["item"] for u in warm}


# ----------------------------------------------------------------------------------------------- the registry


def test_retailrocket_is_registered_with_its_vocabulary() -> None:
    assert "retailrocket" in DATASETS
    assert behaviors_for("retailrocket") == ["click", "cart", "buy"]
    assert default_history_items("retailrocket") == "candidates"
    assert FORMATS["retailrocket"].description


def test_the_registry_is_the_only_list_of_datasets() -> None:
    assert datasets.DATASETS == DATASETS == tuple(FORMATS)
    assert not hasattr(schema, "DATASETS") and not hasattr(schema, "BEHAVIORS")
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.description
        assert behaviors_for(name) == list(fmt.behaviors) and len(set(fmt.behaviors)) == len(fmt.behaviors)
        assert default_history_items(name) == fmt.history_items in ("candidates", "excluded")
    assert behaviors_for("generic", {"behavior_values": {"1": "click", "2": "buy", "3": "click"}}) == ["click", "buy"]
    with pytest.raises(ValueError, match="unknown dataset 'amazon'.*retailrocket"):
        behaviors_for("amazon")
    # No module of the pipeline spells a dataset's name as a string but the registry and the format's own reader
    # (fetch.py's command line names the one dataset it downloads).
    allowed = {("components/data/fetch.py", "ml1m")}
    found = set()
    for package in ("components", "steps", "pipelines", "materializers"):
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Constant) and node.value in FORMATS:
                    found.add((rel, node.value))
    own = {(f"components/data/readers/{name}.py", name) for name in FORMATS}
    registry = {("components/data/readers/registry.py", name) for name in FORMATS}
    assert found - own - registry - allowed == set()
