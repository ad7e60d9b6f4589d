"""Batch recommendations: top-K for every user, written as a Parquet dataset.

histories -> top-K chunks -> Parquet writer:

- :func:`histories_from_clean` expresses cleaned interactions (``components.data.clean.CleanResult``) in a served
  model's own id space (its item list and behavior names): events on items or behaviors the model does not know
  are dropped and counted, every user keeps their whole history (time-ordered), and users of ``users`` that have no
  known event left (cleaned away, or only unknown items) get an empty history: the model's zero-shot answer.
  A model that reads user profiles gets each user's profile codes from the profile table, or is refused.
- :func:`recommend_chunks` scores users in chunks of ``chunk_size`` through the served model's scoring core
  (``ServedModel.top_k``, the one ``recommend`` uses, so the rows equal the served model's answers): exact top-K
  over the whole catalogue, history items excluded when the model was evaluated that way (``history_items``).
  Memory is one chunk's scores (``score_batch`` x n_items floats), whatever the number of users.
- :func:`write_dataset` writes each chunk as one Parquet part file into a hidden temporary folder beside
  ``output_path``, writes ``_SUCCESS`` (a JSON manifest) last and only then renames the folder into place
  (replacing an older dataset); a failure removes the temporary folder and leaves any previous dataset as it was.
- :func:`batch_recommend` chains the two and returns a :class:`BatchReport` (counts, throughput, a sample).

Columns: ``user_id`` (string), ``items`` (list of item id strings, best first), ``scores`` (list of float32),
``model_name``, ``model_version`` (strings), ``generated_at`` (timestamp, UTC).  No MLflow, no ZenML here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.clean import CleanResult, vocabulary_codes
from components.data.schema import USER
from components.serving.ann import ApproximateIndex, recall_at_k
from components.serving.recommender import ServedModel

logger = logging.getLogger(__name__)

#: Written into the dataset folder last: a dataset without it is not complete (it is also never renamed into place).
SUCCESS_FILE = "_SUCCESS"
#: Score at most this many floats at once (``score_batch`` x n_items) unless the caller says otherwise.
SCORE_BUDGET = 32 * 1024 * 1024

SCHEMA = pa.schema([
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("items", pa.list_(pa.string())),
    pa.field("scores", pa.list_(pa.float32())),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("generated_at", pa.timestamp("us", tz="UTC")),
])


@dataclass
class UserHistories:
    """Every user's history in a model's id space, CSR: user ``r`` owns events ``offsets[r]:offsets[r + 1]``
    (time-ordered, oldest first)."""

    user_ids: pa.Array  # original user id (string) of each row
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 [n_events] the model's contiguous item ids (1..n_items)
    behaviors: np.ndarray  # int64 [n_events] the model's behavior codes (1..n_behaviors)
    profile_codes: np.ndarray | None = None  # int64 [n_users, n_fields] for a model that reads profiles
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class BatchReport:
    """What a batch run did: counts, throughput and a few rows."""

    output_path: str
    model_name: str
    model_version: str
    generated_at: str
    k: int
    exclude_seen: bool
    chunk_size: int
    users: int
    rows: int
    parts: int
    seconds: float
    users_per_second: float
    histories: dict
    sample: list[dict]
    #: approximate top-K only: the index's settings and its recall@k against exact on a sample of users
    approximate: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numbers worth a metric (MLflow)."""
        h = self.histories
        return {"batch_users": self.users, "batch_rows": self.rows, "batch_parts": self.parts,
                "batch_seconds": self.seconds, "batch_users_per_second": self.users_per_second,
                "batch_users_without_history": h.get("users_without_history", 0),
                "batch_events_used": h.get("events_used", 0),
                "batch_events_dropped_unknown_item": h.get("events_dropped_unknown_item", 0),
                "batch_events_dropped_unknown_behavior": h.get("events_dropped_unknown_behavior", 0),
                "batch_items_unknown": h.get("items_unknown", 0),
                **({} if self.approximate is None else
                   {f"batch_approximate_recall_at_{self.k}": self.approximate["recall_at_k"]})}


# ---- histories ------------------------------------------------------------------------------------------------------
def all_users(interactions: pa.Table) -> pa.Array:
    """The distinct original user ids of an interactions table (e.g. ingest's, before cleaning), as strings in
    the ids' natural order (numeric ids numerically)."""
    users = pc.unique(interactions.column(USER).combine_chunks())
    return users.take(pc.sort_indices(users)).cast(pa.string())


def histories_from_clean(clean: CleanResult, item_ids: list[str], behavior_names: list[str], *,
                         users: pa.Array | None = None, profiles: pa.Table | None = None,
                         profile_fields: list[str] | None = None,
                         profile_vocab: list[list[str]] | None = None) -> UserHistories:
    """Each user's cleaned history in a model's id space (``item_ids``: original id of each contiguous id, index
    0 = padding; ``behavior_names``: the model's behavior names in code order).

    ``users`` (original ids, default: the cleaned ones) are the rows, in that order; a user with no known event
    gets an empty history.  ``profile_fields`` / ``profile_vocab`` (a model that reads profiles): each user's
    codes from ``profiles`` (``user_id`` plus one column per field; a missing user or value is unknown, code 0);
    refused when the table has none of the fields."""
    t = clean.interactions
    vocab = vocabulary_codes(clean, item_ids, behavior_names)
    items, behaviors = vocab.items, vocab.behaviors

    keep = (items > 0) & (behaviors > 0)
    clean_users = t.column(USER).to_numpy().astype(np.int64)  # contiguous 1..n, sorted by (user, time)
    clean_user_ids = clean.user_ids.cast(pa.string())
    rows = clean_user_ids if users is None else users.cast(pa.string())
    # row of each cleaned user (-1: not a row)
    row_of_clean = np.full(len(clean_user_ids) + 1, -1, np.int64)
    row_of_clean[1:] = pc.index_in(clean_user_ids, value_set=rows).fill_null(-1).to_numpy(
        zero_copy_only=False).astype(np.int64)
    event_rows = row_of_clean[clean_users]
    keep &= event_rows >= 0
    order = np.argsort(event_rows[keep], kind="stable")  # rows in ``users`` order, each user's events in time order
    ev_rows = event_rows[keep][order]
    counts = np.bincount(ev_rows, minlength=len(rows))
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])

    report = {
        "users": len(rows), "users_with_history": int((counts > 0).sum()),
        "users_without_history": int((counts == 0).sum()),
        "users_cleaned_away": int(len(rows) - pc.sum(pc.is_in(rows, value_set=clean_user_ids)).as_py())
        if users is not None else 0,
        "events_in": int(t.num_rows), "events_used": int(offsets[-1]),
        "events_dropped_unknown_item": int((items == 0).sum()),
        "events_dropped_unknown_behavior": int(((items > 0) & (behaviors == 0)).sum()),
        "events_dropped_user_not_a_row": int(((items > 0) & (behaviors > 0) & (event_rows < 0)).sum()),
        "items_in": vocab.n_items, "items_unknown": vocab.unknown_items,
        "behaviors_unknown": vocab.unknown_behaviors, "model_items": len(item_ids) - 1,
    }
    codes = None
    if profile_fields:
        codes = profile_codes(rows, profiles, profile_fields, profile_vocab or [])
        report["users_with_profile"] = int((codes > 0).any(axis=1).sum())
    logger.info("batch histories: %s users (%s without history), %s of %s events used (%s on unknown items)",
                f"{report['users']:,}", f"{report['users_without_history']:,}", f"{report['events_used']:,}",
                f"{report['events_in']:,}", f"{report['events_dropped_unknown_item']:,}")
    return UserHistories(user_ids=rows, offsets=offsets, items=items[keep][order],
                         behaviors=behaviors[keep][order], profile_codes=codes, report=report)


def profile_codes(users: pa.Array, profiles: pa.Table | None, fields: list[str],
                  vocab: list[list[str]]) -> np.ndarray:
    """[n_users, n_fields] codes of each user's profile under a model's ``vocab`` (0 = unknown); raises when the
    model reads profiles the table does not have."""
    no_table = profiles is None or profiles.num_rows == 0
    have = [] if no_table else [f for f in fields if f in profiles.column_names]
    if not have:
        raise ValueError(f"the model reads user profiles ({', '.join(fields)}) but the data has "
                         f"{'no profile table' if no_table else 'none of those fields'}: batch recommendations "
                         "for a profile-reading (tuned) model need the users' profiles; use the pre-trained "
                         "model (mbprompt-<dataset>) or data with profiles")
    out = np.zeros((len(users), len(fields)), np.int64)
    at = pc.index_in(users.cast(pa.string()), value_set=profiles.column(USER).cast(pa.string()).combine_chunks())
    found = at.is_valid().to_numpy(zero_copy_only=False)
    rows = at.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    for j, f in enumerate(fields):
        if f not in have:
            continue
        values = profiles.column(f).cast(pa.string()).combine_chunks()
        value_codes = pc.index_in(values, value_set=pa.array(vocab[j], pa.string())).fill_null(-1).to_numpy(
            zero_copy_only=False).astype(np.int64) + 1  # 0 = unknown
        out[:, j] = np.where(found, value_codes[rows] if len(value_codes) else 0, 0)
    return out


# ---- top-K ----------------------------------------------------------------------------------------------------------
def check_k(k: int, n_items: int) -> None:
    """1 <= k < n_items, or a ValueError that says so."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n_items:
        raise ValueError(f"k must be an integer with 1 <= k < {n_items} (the model's number of items); got {k!r}")


def window(histories: UserHistories, start: int, stop: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` as the model reads them: the last ``max_len`` events, right-aligned, 0 = padding."""
    n = stop - start
    lo, hi = histories.offsets[start:stop], histories.offsets[start + 1:stop + 1]
    lens = np.minimum(hi - lo, max_len)
    items = np.zeros((n, max_len), np.int64)
    behs = np.zeros((n, max_len), np.int64)
    row = np.repeat(np.arange(n), lens)
    pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    src = np.repeat(hi - lens, lens) + pos
    col = max_len - lens[row] + pos
    items[row, col] = histories.items[src]
    behs[row, col] = histories.behaviors[src]
    return items, behs


def recommend_chunks(recommender: ServedModel, histories: UserHistories, *, k: int = 10,
                     exclude_seen: bool | None = None, chunk_size: int = 10_000,
                     score_batch: int | None = None, index: ApproximateIndex | None = None,
                     ) -> Iterator[tuple[pa.Array, np.ndarray, np.ndarray]]:
    """(user ids, top item ids [n, k] as contiguous ids, scores [n, k]) per chunk of ``chunk_size`` users, best
    first.  Exact: every item is scored, unless ``index`` (an approximate index over the model's items) is given.
    ``exclude_seen`` None follows the model's ``history_items``; an excluded item fills a slot (id 0, score -inf)
    only when a user has fewer than ``k`` items left."""
    n_items = len(recommender.item_ids) - 1
    check_k(k, n_items)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    if recommender.profile_fields and histories.profile_codes is None:
        raise ValueError(f"the model reads user profiles ({', '.join(recommender.profile_fields)}): build the "
                         "histories with its profile_fields and profile_vocab (histories_from_clean)")
    exclude = recommender.exclude_seen_default if exclude_seen is None else bool(exclude_seen)
    batch = score_batch or max(1, min(chunk_size, SCORE_BUDGET // (n_items + 1)))
    for start in range(0, len(histories), chunk_size):
        stop = min(start + chunk_size, len(histories))
        top_items = np.zeros((stop - start, k), np.int64)
        top_scores = np.zeros((stop - start, k), np.float32)
        for s in range(start, stop, batch):
            e = min(s + batch, stop)
            items, behs = window(histories, s, e, recommender.max_len)
            lo, hi = histories.offsets[s:e], histories.offsets[s + 1:e + 1]
            seen = (np.repeat(np.arange(e - s), hi - lo), histories.items[histories.offsets[s]:histories.offsets[e]])
            codes = None if histories.profile_codes is None else histories.profile_codes[s:e]
            if index is not None:
                ids, values = index.top_k(items, behs, k, exclude_seen=exclude, seen=seen, profile_codes=codes)
            else:
                top = recommender.top_k(items, behs, k, exclude_seen=exclude, seen=seen, profile_codes=codes)
                values, ids = top.values.cpu().numpy(), top.indices.cpu().numpy()
            top_items[s - start:e - start] = np.where(np.isfinite(values), ids, 0)
            top_scores[s - start:e - start] = values
        yield histories.user_ids.slice(start, stop - start), top_items, top_scores


def to_table(users: pa.Array, top_items: np.ndarray, top_scores: np.ndarray, item_ids: pa.Array, *,
             model_name: str, model_version: str, generated_at: datetime) -> pa.Table:
    """One chunk as rows of :data:`SCHEMA`; slots with id 0 (nothing left to recommend) are left out."""
    valid = top_items > 0
    lengths = valid.sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat_items = item_ids.take(pa.array(top_items[valid]))
    flat_scores = pa.array(top_scores[valid], pa.float32())
    n = len(users)
    return pa.table([
        users.cast(pa.string()),
        pa.ListArray.from_arrays(offsets, flat_items),
        pa.ListArray.from_arrays(offsets, flat_scores),
        pa.repeat(pa.scalar(model_name, pa.string()), n),
        pa.repeat(pa.scalar(str(model_version), pa.string()), n),
        pa.repeat(pa.scalar(generated_at, pa.timestamp("us", tz="UTC")), n),
    ], schema=SCHEMA)


# ---- the dataset ----------------------------------------------------------------------------------------------------
def write_dataset(tables: Iterable[pa.Table], output_path: str | Path, manifest: dict | None = None) -> dict:
    """Write each table as one part file (``part-00000.parquet``, ...) of a dataset at ``output_path``.

    Everything goes to a hidden folder beside ``output_path`` first; ``_SUCCESS`` (the manifest plus rows and
    parts) is written last, then the folder is renamed into place (an older dataset there is replaced only now).
    On any error the temporary folder is removed and ``output_path`` is left as it was.  Returns the manifest."""
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.incomplete-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    rows = parts = 0
    try:
        for table in tables:
            pq.write_table(table, tmp / f"part-{parts:05d}.parquet")
            rows += table.num_rows
            parts += 1
        if parts == 0:  # no user at all: an empty but valid dataset
            pq.write_table(SCHEMA.empty_table(), tmp / "part-00000.parquet")
            parts = 1
        done = {**(manifest or {}), "rows": rows, "parts": parts, "columns": SCHEMA.names,
                "completed_at": datetime.now(timezone.utc).isoformat()}
        (tmp / SUCCESS_FILE).write_text(json.dumps(done, indent=1, default=str))
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return done


def is_complete(output_path: str | Path) -> bool:
    """Whether ``output_path`` holds a dataset :func:`write_dataset` finished."""
    return (Path(output_path) / SUCCESS_FILE).is_file()


def approximate_recall(recommender: ServedModel, histories: UserHistories, index: ApproximateIndex, *, k: int,
                       exclude_seen: bool, users: int = 2_000) -> dict:
    """Recall@k of ``index`` against exact top-k on the first ``users`` users (both through ``recommend_chunks``)."""
    sample = UserHistories(histories.user_ids.slice(0, users), histories.offsets[:users + 1], histories.items,
                           histories.behaviors, None if histories.profile_codes is None
                           else histories.profile_codes[:users])
    exact = np.concatenate([t for _, t, _ in recommend_chunks(recommender, sample, k=k, exclude_seen=exclude_seen)])
    approx = np.concatenate([t for _, t, _ in recommend_chunks(recommender, sample, k=k, exclude_seen=exclude_seen,
                                                               index=index)])
    return {"recall_at_k": round(recall_at_k(approx, exact), 4), "recall_users": len(sample), "k": k,
            "index": "faiss HNSW inner product", **asdict(index.config)}


def batch_recommend(recommender: ServedModel, histories: UserHistories, output_path: str | Path, *,
                    model_name: str, model_version: str, k: int = 10, exclude_seen: bool | None = None,
                    chunk_size: int = 10_000, score_batch: int | None = None, generated_at: datetime | None = None,
                    sample_size: int = 5, index: ApproximateIndex | None = None) -> BatchReport:
    """Top-``k`` for every user of ``histories``, written to ``output_path`` (:func:`write_dataset`); with
    ``index``, approximate top-k, whose recall against exact on a sample of users is measured first and reported
    (``BatchReport.approximate``)."""
    generated_at = generated_at or datetime.now(timezone.utc)
    exclude = recommender.exclude_seen_default if exclude_seen is None else bool(exclude_seen)
    approximate = None
    if index is not None:
        approximate = approximate_recall(recommender, histories, index, k=k, exclude_seen=exclude)
        logger.info("approximate top-%d: recall@%d %.4f against exact on %s users", k, k,
                    approximate["recall_at_k"], f"{approximate['recall_users']:,}")
    item_ids = pa.array([str(x) for x in recommender.item_ids], pa.string())
    sample: list[dict] = []
    t0 = time.perf_counter()

    def tables() -> Iterator[pa.Table]:
        done = 0
        for users, top_items, top_scores in recommend_chunks(recommender, histories, k=k, exclude_seen=exclude,
                                                             chunk_size=chunk_size, score_batch=score_batch,
                                                             index=index):
            table = to_table(users, top_items, top_scores, item_ids, model_name=model_name,
                             model_version=str(model_version), generated_at=generated_at)
            if len(sample) < sample_size:
                sample.extend(table.slice(0, sample_size - len(sample)).select(["user_id", "items", "scores"])
                              .to_pylist())
            done += table.num_rows
            logger.info("batch recommendations: %s / %s users", f"{done:,}", f"{len(histories):,}")
            yield table

    manifest = write_dataset(tables(), output_path, {
        "model_name": model_name, "model_version": str(model_version), "k": k, "exclude_seen": exclude,
        "generated_at": generated_at.isoformat(), "users": len(histories), "approximate": approximate})
    seconds = time.perf_counter() - t0
    report = BatchReport(output_path=str(output_path), model_name=model_name, model_version=str(model_version),
                         generated_at=generated_at.isoformat(), k=k, exclude_seen=exclude, chunk_size=chunk_size,
                         users=len(histories), rows=manifest["rows"], parts=manifest["parts"],
                         seconds=round(seconds, 3), users_per_second=round(len(histories) / max(seconds, 1e-9), 1),
                         histories=histories.report, sample=sample, approximate=approximate)
    logger.info("batch recommendations: %s rows in %s parts at %s in %.1f s (%.0f users/s)", f"{report.rows:,}",
                report.parts, output_path, seconds, report.users_per_second)
    return report
