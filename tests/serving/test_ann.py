"""The optional approximate top-K (components/serving/ann.py): an HNSW index over a dot-product model's items,
whose recall against exact top-K is measured, never assumed; seen items stay excluded; models it cannot serve are
refused."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from components.models.popularity import PopularityModel
from components.models.registry import build_model
from components.serving import batch
from components.serving.ann import ApproximateIndex, IndexConfig, is_dot_product, recall_at_k
from tests.models.synthetic import one_torch_thread  # noqa: F401  (fixture)
from tests.serving.test_batch import _histories, fresh, served  # noqa: F401  (fixtures)

pytest.importorskip("faiss", reason="the ann extra (faiss-cpu) is part of the dev install")


def test_the_index_serves_the_small_model_with_seen_items_excluded(served, fresh, tmp_path):  # noqa: F811
    h, _ = _histories(fresh, served)
    index = ApproximateIndex(served.model, IndexConfig(m=16, ef_search=64))
    report = batch.batch_recommend(served, h, tmp_path / "ann", model_name="m", model_version="1", k=5,
                                   chunk_size=20, index=index)
    # 60 items: the graph search visits them all, so it must find the exact answer.
    assert report.approximate["recall_at_k"] >= 0.99 and report.approximate["recall_users"] == len(h)
    assert report.metrics()["batch_approximate_recall_at_5"] == report.approximate["recall_at_k"]
    rows = pq.read_table(tmp_path / "ann").to_pylist()
    assert len(rows) == len(h)
    seen = {}
    for r, user in enumerate(h.user_ids.to_pylist()):
        seen[user] = {served.item_ids[i] for i in h.items[h.offsets[r]:h.offsets[r + 1]]}
    for row in rows:
        assert row["items"] and not set(row["items"]) & seen[row["user_id"]]
        assert "" not in row["items"] and all(np.isfinite(row["scores"]))
        assert row["scores"] == sorted(row["scores"], reverse=True)


def test_recall_is_measured_and_grows_with_the_search_width():
    torch.manual_seed(0)
    n_items = 20_000
    model = build_model("sasrec", {"n_items": n_items, "n_behaviors": 1, "max_len": 8, "hidden": 16, "n_layers": 1,
                                   "seed": 0}).eval()
    g = np.random.default_rng(0)
    items = g.integers(1, n_items + 1, size=(300, 8))
    behs = np.ones_like(items)
    with torch.no_grad():
        exact = torch.topk(model.score_all(torch.as_tensor(items), torch.as_tensor(behs)), 10).indices.numpy()
    narrow = ApproximateIndex(model, IndexConfig(m=4, ef_construction=8, ef_search=1))
    wide = ApproximateIndex(model, IndexConfig(m=32, ef_construction=200, ef_search=256))
    r_narrow = recall_at_k(narrow.top_k(items, behs, 10, exclude_seen=False)[0], exact)
    r_wide = recall_at_k(wide.top_k(items, behs, 10, exclude_seen=False)[0], exact)
    assert r_wide >= 0.9 and r_wide > r_narrow, (r_narrow, r_wide)


def test_models_that_are_not_dot_products_are_refused():
    assert not is_dot_product(PopularityModel(10))
    with pytest.raises(ValueError, match="dot-product"):
        ApproximateIndex(PopularityModel(10))
    assert recall_at_k(np.array([[1, 2, 0]]), np.array([[2, 3, 0]])) == 0.5
