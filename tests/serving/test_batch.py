"""Batch recommendations (components/serving/batch.py) on a small SASRec trained for one epoch: one row per user,
the served model's answers, seen items excluded as evaluated, unknown items dropped and counted, and a dataset
that is either complete or absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest

from components.data import prepare
from components.data.schema import BEHAVIOR_TYPE
from components.serving import batch
from components.serving.recommender import ServedModel, write_bundle
from components.training.pretrain import pretrain_model
from tests.models.synthetic import one_torch_thread  # noqa: F401  (fixture)

BEHAVIORS = ("click", "buy")


def _raw(seed: int = 0, n_users: int = 83, n_items: int = 61) -> pa.Table:
    """Users walk a cycle of items (learnable); user 7 has only 3 events (the k-core drops him)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items)
    users, items, behs, ts = [], [], [], []
    for u in range(1, n_users + 1):
        n = 3 if u == 7 else int(rng.integers(8, 30))
        p = int(rng.integers(n_items))
        for t in range(n):
            b = int(rng.random() < 0.4)
            users.append(1000 + u)
            items.append(f"m{perm[p % n_items]}")
            behs.append(b)
            ts.append(1_000_000 + 60 * t + u)
            p += 1 + b
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.string()),
                     "behavior": pa.DictionaryArray.from_arrays(pa.array(behs, pa.int8()),
                                                                pa.array(list(BEHAVIORS), pa.string())),
                     "timestamp": pa.array(ts, pa.int64())})


RULES = {"min_user_events": 5, "min_item_events": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> ServedModel:
    raw = _raw()
    cleaned = prepare.clean(raw, RULES)
    data = prepare.split(cleaned, None, prepare.split_config(3, {"n_negatives": 20, "history_items": "excluded"}))
    trained = pretrain_model(data, {"name": "sasrec", "max_len": 12, "hidden": 16, "n_layers": 1, "dropout": 0.0},
                             {"epochs": 1, "batch_size": 32, "progress": False, "device": "cpu", "valid_set": None},
                             seed=3)
    d = tmp_path_factory.mktemp("bundle")
    files = write_bundle(d, architecture=trained.architecture, config=trained.config, state_dict=trained.state_dict,
                         behavior_names=data.behavior_names,
                         target_behaviors=[data.behavior_names[c - 1] for c in data.target_behaviors],
                         item_ids=[str(x) for x in data.item_ids.tolist()], history_items="excluded")
    return ServedModel(files["weights"], files["model"], files["items"])


@pytest.fixture(scope="module")
def fresh() -> pa.Table:
    """The training data plus events on items the model never saw, and a user who has only such items."""
    raw = _raw()
    extra = pa.table({"user_id": pa.array([1001, 1001, 1002, 9999, 9999, 9999, 9999, 9999], pa.int64()),
                      "item_id": pa.array(["new-1", "new-2", "new-1"] + ["new-3"] * 5, pa.string()),
                      "behavior": pa.DictionaryArray.from_arrays(pa.array([0] * 8, pa.int8()),
                                                                 pa.array(list(BEHAVIORS), pa.string())),
                      "timestamp": pa.array([2_000_000 + i for i in range(8)], pa.int64())})
    return pa.concat_tables([raw, extra.cast(raw.schema)])


def _histories(fresh: pa.Table, served: ServedModel) -> tuple[batch.UserHistories, prepare.CleanResult]:
    cleaned = prepare.clean(fresh, RULES)
    h = batch.histories_from_clean(cleaned, served.item_ids, served.behavior_names, users=batch.all_users(fresh))
    return h, cleaned


def _original_history(fresh: pa.Table, user: str) -> tuple[list[str], list[str]]:
    df = fresh.to_pandas()
    df = df[df.user_id.astype(str) == user].sort_values("timestamp", kind="stable")
    return df.item_id.tolist(), df.behavior.astype(str).tolist()


def test_one_row_per_user_equal_to_the_served_answers(served, fresh, tmp_path):
    h, cleaned = _histories(fresh, served)
    out = tmp_path / "recs"
    report = batch.batch_recommend(served, h, out, model_name="m", model_version="3", k=7, chunk_size=10)
    assert batch.is_complete(out)
    df = pd.read_parquet(out)
    users = sorted({str(u) for u in fresh.column("user_id").to_pylist()}, key=int)
    assert df.user_id.tolist() == users and report.rows == len(users) == 84
    assert report.parts == 9 and len(list(out.glob("part-*.parquet"))) == 9
    assert list(df.columns) == ["user_id", "items", "scores", "model_name", "model_version", "generated_at"]
    assert set(df.model_name) == {"m"} and set(df.model_version) == {"3"} and df.generated_at.nunique() == 1
    # users the data cleaning dropped (7: 3 events) or who know only unknown items (9999) get the zero-shot answer
    assert h.report["users_without_history"] == 2 and h.report["users_cleaned_away"] == 1
    # new-1 (2 events) and new-3 (5) are unknown to the model; new-2 (1 event) is gone in the k-core already
    assert h.report["events_dropped_unknown_item"] == 7 and h.report["items_unknown"] == 2
    empty = served.recommend([[]], k=7)[0]
    for user in ("1007", "9999"):
        row = df[df.user_id == user].iloc[0]
        assert list(row["items"]) == empty["items"]
    catalogue = set(served.item_ids[1:])
    for _, row in df.iterrows():
        items, scores = list(row["items"]), list(row["scores"])
        assert len(items) == 7 and len(set(items)) == 7 and set(items) <= catalogue
        assert scores == sorted(scores, reverse=True)
    # ids map back: the same rows as the served model's recommend on the original ids (unknown ones skipped)
    for user in ("1001", "1002", "1040", "1083"):
        hist, behs = _original_history(fresh, user)
        want = served.recommend([hist], [behs], k=7)[0]
        row = df[df.user_id == user].iloc[0]
        assert list(row["items"]) == want["items"], user
        assert np.allclose(row["scores"], want["scores"], rtol=1e-5, atol=1e-5)
        assert not set(row["items"]) & set(hist)  # history_items: excluded


def test_seen_items_come_back_when_not_excluded(served, fresh, tmp_path):
    h, _ = _histories(fresh, served)
    shown = next(batch.recommend_chunks(served, h, k=len(served.item_ids) - 2, exclude_seen=False, chunk_size=200))
    unseen = next(batch.recommend_chunks(served, h, k=5, exclude_seen=True, chunk_size=200))
    r = 0  # user 1001
    seen = set(h.items[h.offsets[r]:h.offsets[r + 1]].tolist())
    assert seen and seen <= set(shown[1][r].tolist())
    assert not seen & set(unseen[1][r].tolist())
    # k above what is left unseen: a row holds only the items left, never an excluded one
    n_items = len(served.item_ids) - 1
    batch.batch_recommend(served, h, tmp_path / "all", model_name="m", model_version="1", k=n_items - 1,
                          exclude_seen=True)
    df = pd.read_parquet(tmp_path / "all")
    for r in (0, 1, 40):
        seen = {served.item_ids[i] for i in h.items[h.offsets[r]:h.offsets[r + 1]]}
        row = df.iloc[r]
        assert len(row["items"]) == min(n_items - 1, n_items - len(seen)) and not seen & set(row["items"])
        assert np.isfinite(row["scores"]).all()


def test_k_is_checked(served, fresh, tmp_path):
    h, _ = _histories(fresh, served)
    n_items = len(served.item_ids) - 1
    for k in (0, n_items, -1, 2.5):
        with pytest.raises(ValueError, match=rf"1 <= k < {n_items}"):
            batch.batch_recommend(served, h, tmp_path / "x", model_name="m", model_version="1", k=k)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_a_failed_run_leaves_the_previous_dataset(tmp_path):
    out = tmp_path / "recs"
    batch.write_dataset([batch.SCHEMA.empty_table()], out, {"run": 1})
    assert batch.is_complete(out)

    def failing():
        yield batch.SCHEMA.empty_table()
        raise RuntimeError("scoring died")

    with pytest.raises(RuntimeError, match="scoring died"):
        batch.write_dataset(failing(), out, {"run": 2})
    assert '"run": 1' in (out / batch.SUCCESS_FILE).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs"]  # no half-written folder left beside it


def test_profile_reading_models_need_profiles():
    users = pa.array(["1", "2", "3"])
    profiles = pa.table({"user_id": ["2", "1"], "age": ["25", "99"], "gender": ["F", None]})
    codes = batch.profile_codes(users, profiles, ["age", "gender"], [["18", "25"], ["F", "M"]])
    assert codes.tolist() == [[0, 0], [2, 1], [0, 0]]
    with pytest.raises(ValueError, match="reads user profiles"):
        batch.profile_codes(users, None, ["age"], [["25"]])
    with pytest.raises(ValueError, match="none of those fields"):
        batch.profile_codes(users, profiles, ["occupation"], [["1"]])


def test_a_profile_reading_tuned_model_gets_each_users_profile(tmp_path):
    """ppr_light over SASRec (random weights): the batch rows are the served answers for each user's profile."""
    from components.models.registry import build_model
    from components.models.tuned.methods import method_config
    from tests.models.test_causality import PROFILE_FIELDS, PROFILE_VOCAB, TUNING, _encoder_config, _perturb

    cfg = method_config("ppr_light", dict(base_architecture="sasrec", base_config=_encoder_config("sasrec"),
                                          n_items=40, target_behaviors=[3], profile_fields=PROFILE_FIELDS,
                                          profile_vocab=PROFILE_VOCAB, seed=0, **TUNING), strict=False).to_dict()
    model = _perturb(build_model("sasrec", cfg, "ppr_light"))
    names = ["a", "b", "c"]
    files = write_bundle(tmp_path / "b", architecture="sasrec", method="ppr_light", config=cfg,
                         state_dict=model.state_dict(), behavior_names=names, target_behaviors=["c"],
                         item_ids=[""] + [f"x{i}" for i in range(1, 41)], history_items="excluded")
    served = ServedModel(files["weights"], files["model"], files["items"])
    assert served.profile_fields == PROFILE_FIELDS
    rng = np.random.default_rng(1)
    n = 12
    users = np.repeat(np.arange(1, n + 1), 6)
    raw = pa.table({"user_id": pa.array(users, pa.int64()),
                    "item_id": pa.array([f"x{i}" for i in rng.integers(1, 41, users.size)], pa.string()),
                    "behavior": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 3, users.size), pa.int8()),
                                                               pa.array(names, pa.string())),
                    "timestamp": pa.array(np.arange(users.size), pa.int64())})
    profiles = pa.table({"user_id": [str(u) for u in range(1, n + 1)],
                         "age": [["18", "25", "35", None][u % 4] for u in range(1, n + 1)],
                         "gender": [["F", "M", "X"][u % 3] for u in range(1, n + 1)]})
    cleaned = prepare.clean(raw, {})
    with pytest.raises(ValueError, match="reads user profiles"):
        batch.histories_from_clean(cleaned, served.item_ids, served.behavior_names, profiles=None,
                                   profile_fields=served.profile_fields, profile_vocab=served.profile_vocab)
    h = batch.histories_from_clean(cleaned, served.item_ids, served.behavior_names, users=batch.all_users(raw),
                                   profiles=profiles, profile_fields=served.profile_fields,
                                   profile_vocab=served.profile_vocab)
    report = batch.batch_recommend(served, h, tmp_path / "recs", model_name="m-ppr_light", model_version="1", k=5,
                                   chunk_size=5)
    df = pd.read_parquet(tmp_path / "recs")
    assert report.rows == len(df) == n
    assert h.report["users_with_profile"] == n - 1  # user 11: age None, gender "X" (unknown to the model)
    for r, row in df.iterrows():
        u = int(row["user_id"])
        hist = raw.filter(pa.compute.equal(raw.column("user_id"), u))
        profile = {"age": profiles.column("age")[u - 1].as_py(), "gender": profiles.column("gender")[u - 1].as_py()}
        want = served.recommend([hist.column("item_id").to_pylist()],
                                [[str(b) for b in hist.column("behavior").to_pylist()]], k=5,
                                profiles=[profile])[0]
        assert list(row["items"]) == want["items"], u
        assert np.allclose(row["scores"], want["scores"], rtol=1e-5, atol=1e-5)
