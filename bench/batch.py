"""Throughput of batch recommendations (components/serving/batch.py): users per second, scoring and writing.

    OMP_NUM_THREADS=1 python -m bench.batch ml1m [--raw-path data/ml-1m] [--k 10] [--chunk-size 2000]
    OMP_NUM_THREADS=1 python -m bench.batch synthetic --users 1000000 --items 1000000 --score-users 5000

``ml1m``: every ML-1M user (ingest -> clean with configs/quickstart.yaml's rules, histories in the model's ids) top-10
through a quickstart-sized SASRec (max_len 50, hidden 64, 2 layers) with random weights: the cost does not
depend on the weights, so no training is needed.  ``synthetic``: ``--users`` users with ``--events`` random events
each over a ``--items`` catalogue, a small random SASRec (hidden 32, 1 layer, max_len 50); the histories of every
user are built (time and peak memory reported), the top-K is measured on the first ``--score-users`` users and
extrapolated to all of them (an exact top-K over 10^6 items costs ~10^6 multiply-adds per user and hidden unit).
Prints one JSON object: the figures, the command's settings, ``uptime`` and the date.

``--approximate`` (synthetic only) also builds an HNSW index over the item table (components/serving/ann.py,
``--hnsw-m``, ``--ef-construction``, ``--ef-search``), and times the same users exact and approximate alternately (exact, approximate,
exact, approximate: ``--rounds`` each) so that load falls on both alike; it reports both medians, their ratio, the
index's build time and its recall@k against exact on those users.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from components.data import prepare
from components.data.clean import CleanResult
from components.models.registry import build_model
from components.serving import batch
from components.serving.recommender import ServedModel, write_bundle

REPO = Path(__file__).resolve().parents[1]


def _recommender(tmp: Path, n_items: int, behaviors: list[str], item_ids: list[str], **config) -> ServedModel:
    config = {"n_items": n_items, "n_behaviors": len(behaviors), **config}
    model = build_model("sasrec", config)
    files = write_bundle(tmp, architecture="sasrec", config=config, state_dict=model.state_dict(),
                         behavior_names=behaviors, target_behaviors=behaviors[-1:], item_ids=item_ids,
                         history_items="excluded")
    return ServedModel(files["weights"], files["model"], files["items"])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _head(h: batch.UserHistories, n: int) -> batch.UserHistories:
    n = min(n, len(h))
    end = int(h.offsets[n])
    return batch.UserHistories(h.user_ids.slice(0, n), h.offsets[:n + 1], h.items[:end], h.behaviors[:end],
                               None if h.profile_codes is None else h.profile_codes[:n], h.report)


def ml1m(args) -> dict:
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    p = prepare.stage_parameters(cfg, raw_path=args.raw_path)
    raw = prepare.ingest(**p["ingest"])
    cleaned = prepare.clean(raw.interactions, **p["clean"])
    item_ids = [""] + [str(x) for x in cleaned.item_ids.to_pylist()]
    with tempfile.TemporaryDirectory() as tmp:
        rec = _recommender(Path(tmp), len(item_ids) - 1, cleaned.behavior_names, item_ids, max_len=50, hidden=64,
                           n_layers=2, n_heads=1, dropout=0.2)
        t0 = time.perf_counter()
        h = batch.histories_from_clean(cleaned, rec.item_ids, rec.behavior_names,
                                       users=batch.all_users(raw.interactions))
        t_hist = time.perf_counter() - t0
        report = batch.batch_recommend(rec, h, Path(tmp) / "out", model_name="bench", model_version="0", k=args.k,
                                       chunk_size=args.chunk_size)
    return {"users": report.users, "items": len(item_ids) - 1, "events": h.report["events_used"],
            "histories_seconds": round(t_hist, 3), "batch_seconds": report.seconds,
            "users_per_second": report.users_per_second, "parts": report.parts, "peak_rss_mb": round(_peak_rss_mb())}


def synthetic(args) -> dict:
    rng = np.random.default_rng(0)
    n_users, n_items, n_ev = args.users, args.items, args.events
    t0 = time.perf_counter()
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int32), n_ev)
    items = rng.integers(1, n_items + 1, size=users.size, dtype=np.int32)
    behaviors = ["click", "buy"]
    codes = pa.array(rng.integers(0, 2, users.size, dtype=np.int8))
    table = pa.table({"user_id": users, "item_id": items,
                      "behavior": pa.DictionaryArray.from_arrays(codes, pa.array(behaviors)),
                      "timestamp": np.tile(np.arange(n_ev, dtype=np.int64), n_users)})
    ids = pa.array([str(i) for i in range(1, n_items + 1)], pa.string())
    cleaned = CleanResult(table, pa.array([str(u) for u in range(1, n_users + 1)], pa.string()), ids)
    t_data = time.perf_counter() - t0
    item_ids = [""] + ids.to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        rec = _recommender(Path(tmp), n_items, behaviors, item_ids, max_len=50, hidden=32, n_layers=1, n_heads=1,
                           dropout=0.0)
        t0 = time.perf_counter()
        h = batch.histories_from_clean(cleaned, rec.item_ids, rec.behavior_names)
        t_hist = time.perf_counter() - t0
        del table, cleaned
        sub = _head(h, args.score_users)
        report = batch.batch_recommend(rec, sub, Path(tmp) / "out", model_name="bench", model_version="0", k=args.k,
                                       chunk_size=args.chunk_size)
        extra = {}
        if args.approximate:
            extra = _approximate(args, rec, sub, Path(tmp), report.seconds)
    return {**extra, "users": n_users, "items": n_items, "events": int(h.offsets[-1]), "data_seconds": round(t_data, 1),
            "histories_seconds": round(t_hist, 1), "scored_users": report.users, "batch_seconds": report.seconds,
            "users_per_second": report.users_per_second,
            "extrapolated_hours_all_users": round(n_users / report.users_per_second / 3600, 2),
            "peak_rss_mb": round(_peak_rss_mb())}


def _approximate(args, rec: ServedModel, sub: batch.UserHistories, tmp: Path, first_exact: float) -> dict:
    import statistics

    from components.serving.ann import ApproximateIndex, IndexConfig

    t0 = time.perf_counter()
    index = ApproximateIndex(rec.model, IndexConfig(m=args.hnsw_m, ef_construction=args.ef_construction,
                                                 ef_search=args.ef_search))
    build = time.perf_counter() - t0
    exact_s, approx_s, recall = [first_exact], [], None
    for r in range(args.rounds):
        if r:
            exact_s.append(batch.batch_recommend(rec, sub, tmp / "exact", model_name="bench", model_version="0",
                                                 k=args.k, chunk_size=args.chunk_size).seconds)
        t0 = time.perf_counter()
        ids = np.concatenate([t for _, t, _ in batch.recommend_chunks(rec, sub, k=args.k, chunk_size=args.chunk_size,
                                                                       index=index)])
        approx_s.append(time.perf_counter() - t0)
        if recall is None:
            exact = np.concatenate([t for _, t, _ in batch.recommend_chunks(rec, sub, k=args.k,
                                                                             chunk_size=args.chunk_size)])
            from components.serving.ann import recall_at_k
            recall = recall_at_k(ids, exact)
    e, a = statistics.median(exact_s), statistics.median(approx_s)
    return {"approximate": {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                            "ef_search": args.ef_search, "build_seconds": round(build, 1),
                            "exact_seconds_median": round(e, 2), "approximate_seconds_median": round(a, 2),
                            "exact_users_per_second": round(len(sub) / e, 1),
                            "approximate_users_per_second": round(len(sub) / a, 1),
                            "speedup": round(e / a, 1), f"recall_at_{args.k}": round(recall, 4),
                            "rounds": args.rounds}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=("ml1m", "synthetic"))
    ap.add_argument("--raw-path", default=str(REPO / "data" / "ml-1m"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--score-users", type=int, default=5000)
    ap.add_argument("--approximate", action="store_true", help="also time an HNSW index (needs the ann extra)")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = ml1m(args) if args.case == "ml1m" else synthetic(args)
    out.update(case=args.case, k=args.k, chunk_size=args.chunk_size, torch_threads=torch.get_num_threads(),
               started=started, uptime_before=load,
               uptime_after=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(json.dumps(out, indent=1))  # noqa: T201 - a bench's output


if __name__ == "__main__":
    main()
