"""The champion gate: measure the current champion on the challenger's data, decide, and move the alias under a
lock.  ``components.registry.register`` calls :func:`promote` once a version is registered; the decision itself
is the pure ``components.registry.promotion.decide_promotion``.

**Same data.**  The champion is loaded through the gateway (``versions.load_served``: integrity checked, a frozen
base fetched) and evaluated with the project's evaluation (``components.training.evaluation.evaluate``) on the
challenger's target set, protocol and metric, as the challenger's own figure was (e.g.
``valid_sampled99_ndcg_at_10``: the challenger's ``valid`` targets against their stored 99 negatives, candidates
following the split's ``history_items``).  A champion whose item ids or behavior names differ from the
challenger's data cannot be scored there (its ids mean other items): the decision says so and follows
``unscorable`` (``keep`` by default).

**Serialized.**  Read the alias, measure, decide and set happen under :func:`promotion_lock`:

- a local store (``sqlite:///<file>`` or a file store) takes an exclusive ``flock`` on a lock file beside the
  store (``.<name>.promotion.lock``), so concurrent registrations on this machine decide one after the other and
  each sees the champion the previous one left;
- a remote tracking server (http, databricks, a database URI) cannot be locked from here; the gate then checks
  optimistically: it re-reads the alias right before setting it and decides again if it moved while measuring;
  after setting, it waits ``settle_s`` and re-reads: if another registration set the alias in the meantime, it
  decides again against that version (which re-decides against it in turn), so the better one ends as champion.
  What remains is a writer whose re-read and set are more than ``settle_s`` apart; for a guarantee, run
  registrations of one name one at a time (one schedule) or against a local store.

Both modes re-check the alias; the lock makes the re-checks pass the first time.
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient

from components.data.sequences import SequenceDataset
from components.registry import store
from components.registry.integrity import IntegrityError
from components.registry.names import CHAMPION
from components.registry.promotion import Promotion, Standing, decide_promotion

logger = logging.getLogger(__name__)

_METRIC = re.compile(r"^(?P<split>cold_valid|cold_test|valid|test)_(?P<protocol>sampled\d+|full)_(?P<name>.+)$")


def parse_metric(metric: str) -> tuple[str, str, str]:
    """(target set, protocol, metric) of a selection metric name, e.g. ``valid_sampled99_ndcg_at_10`` ->
    (``valid``, ``sampled99``, ``ndcg_at_10``).  ValueError for a name the gate cannot measure again."""
    m = _METRIC.match(metric or "")
    if m is None:
        raise ValueError(f"selection metric {metric!r}: expected <valid|cold_valid|test|cold_test>_<sampledN|full>_"
                         "<metric>, e.g. valid_sampled99_ndcg_at_10 (the champion gate measures the champion on "
                         "the challenger's data with it)")
    return m["split"], m["protocol"], m["name"]


def measure(model, data: SequenceDataset, metric: str) -> float:
    """``metric`` of a ``components.models.base.Recommender`` on ``data``, as the evaluate step measures it."""
    from components.training.evaluation import evaluate

    split, protocol, name = parse_metric(metric)
    if split not in data.targets or len(data.targets[split]) == 0:
        raise ValueError(f"{metric}: the challenger's data has no {split!r} targets (has {sorted(data.targets)})")
    at = re.search(r"_at_(\d+)$", name)
    ks = (int(at[1]),) if at else (10,)
    out = evaluate(model, data, split, ks=ks, protocols=("full" if protocol == "full" else "sampled",))
    key = f"{protocol}_{name}"
    if key not in out:
        raise ValueError(f"{metric}: the evaluation of {split!r} gave {sorted(out)}, not {key!r} (another number of "
                         "stored negatives?)")
    return float(out[key])


def vocabulary_mismatch(item_ids: list[str], behavior_names: list[str], data: SequenceDataset) -> str | None:
    """Why a model with these vocabularies cannot score ``data`` (None: it can)."""
    theirs = [str(x) for x in data.item_ids.tolist()]
    if list(item_ids) != theirs:
        known = set(item_ids[1:])
        unknown = sum(1 for x in theirs[1:] if x not in known)
        return (f"item vocabularies differ: the champion knows {len(item_ids) - 1} items, the challenger's data has "
                f"{len(theirs) - 1} ({unknown} unknown to the champion, or the same items in another order)")
    if list(behavior_names) != list(data.behavior_names):
        return f"behavior vocabularies differ: {list(behavior_names)} vs {list(data.behavior_names)}"
    return None


def score_champion(name: str, champion, data: SequenceDataset, metric: str,
                   tracking_uri: str | None = None) -> Standing:
    """The champion's standing with its value measured on the challenger's ``data`` (``champion``: its MLflow
    model version).  When it cannot be measured there, ``value`` is None and ``unscored`` says why."""
    from components.registry import versions

    standing = Standing.from_tags(champion.version, champion.tags)
    if standing.metric != metric or standing.history_items != data.meta.get("history_items", "excluded"):
        return standing  # the decision refuses to compare these: nothing to measure
    try:
        served = versions.load_served(name, champion.version, tracking_uri)
    except IntegrityError as e:
        return replace(standing, value=None, unscored=f"it fails its integrity check: {e}")
    model = served.recommender
    why = vocabulary_mismatch(model.item_ids, model.behavior_names, data)
    if why is not None:
        return replace(standing, value=None, unscored=why)
    value = measure(model.model, data, metric)
    logger.info("champion %s v%s on the challenger's data: %s = %.4f (recorded on its own split: %s)", name,
                champion.version, metric, value, standing.recorded)
    return replace(standing, value=value)


def lock_file(name: str, tracking_uri: str | None = None) -> Path | None:
    """The lock file of ``name``'s promotions for a local store (beside the SQLite file or in the file store);
    None for a remote tracking server."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = unquote(uri[len("sqlite:///"):].split("?", 1)[0]) if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            return None
        folder = Path(path).parent
    elif parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
    elif parsed.scheme == "" and uri:
        folder = Path(uri)
    else:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return folder / f".{safe}.promotion.lock"


@contextmanager
def promotion_lock(name: str, tracking_uri: str | None = None, *, enabled: bool | None = None) -> Iterator[bool]:
    """Hold the exclusive lock on ``name``'s promotions while the block runs; yields whether a lock is held.
    ``enabled`` None: lock when the store is local; False: never (optimistic checks only); True: a local store is
    required."""
    path = None if enabled is False else lock_file(name, tracking_uri)
    if path is None:
        if enabled:
            raise ValueError(f"promotion lock for {name}: {tracking_uri or mlflow.get_tracking_uri()} is not a local "
                             "store")
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # per open file: threads and processes both wait here
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _alias(name: str, tracking_uri: str | None) -> str | None:
    mv = store.aliased_version(name, CHAMPION, tracking_uri)
    return None if mv is None else str(mv.version)


def promote(name: str, version: str, data: SequenceDataset, metric: str, value: float, *,
            tracking_uri: str | None = None, unscorable: str = "keep", lock: bool | None = None,
            settle_s: float = 1.0, max_rounds: int = 5,
            on_decision: Callable[[Promotion], None] | None = None) -> Promotion:
    """Decide whether ``name`` v``version`` (``metric`` = ``value`` on ``data``, the challenger's sequences)
    becomes the champion and move the alias if so, serialized as the module says.  ``on_decision`` is called
    with each decision before the alias is touched (logging; tests use it to interleave two registrations)."""
    version = str(version)
    challenger = Standing(version, metric, float(value), data.meta.get("history_items", "excluded"))
    client = MlflowClient(tracking_uri)
    last: Promotion | None = None
    with promotion_lock(name, tracking_uri, enabled=lock) as locked:
        for _ in range(max_rounds):
            current = store.aliased_version(name, CHAMPION, tracking_uri)
            seen = None if current is None else str(current.version)
            if seen == version:
                return last or Promotion(True, f"v{version} is the champion already")
            champion = None if current is None else score_champion(name, current, data, metric, tracking_uri)
            decision = last = decide_promotion(name, challenger, champion, unscorable=unscorable)
            if on_decision is not None:
                on_decision(decision)
            if _alias(name, tracking_uri) != seen:
                logger.info("%s: the champion alias moved while v%s was measured against v%s; deciding again",
                            name, version, seen)
                continue
            if not decision.promote:
                return decision
            client.set_registered_model_alias(name, CHAMPION, version)
            if not locked and settle_s > 0:
                time.sleep(settle_s)  # let a concurrent writer that already decided land its set first
            now = _alias(name, tracking_uri)
            if now == version:
                return decision
            logger.info("%s: v%s set the champion alias, then v%s did; deciding again against it", name, version, now)
        raise RuntimeError(f"{name} v{version}: the champion alias moved {max_rounds} times while this version was "
                           "decided; register again when the other registrations have finished")
