"""A registered version as a trained model: ``load_version`` downloads the files ``register_recommender`` stored
with it (``weights.safetensors``, ``model.json``, ``items.json``) and returns a
``components.training.refresh.ChampionBase``: the TrainedModel, its vocabularies and where it is registered.
Without a version it loads the champion: the base the daily refresh re-tunes and prompt tuning starts from.
``load_served`` loads a version as the served model does (``components.serving.recommender.ServedModel``, a tuned
model's frozen base fetched and checked): what batch recommendations score with.

Both check every downloaded file against the version's integrity manifest before reading any
(``components.registry.integrity``; a mismatch raises ``IntegrityError`` naming the model, version, file and
check), and neither imports the stored model code."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.models.trained import TrainedModel
from components.registry import store
from components.registry.integrity import IntegrityError
from components.registry.names import BUNDLE_FILES, CHAMPION, WEIGHTS_TAG
from components.serving.recommender import ServedModel, weights_digest
from components.training.refresh import ChampionBase

logger = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """The registered model has no champion to start from."""


def _resolve(name: str, version: str | int | None, tracking_uri: str | None) -> str:
    """``version`` as a string, or the champion's version when None (NoChampionError without one)."""
    if version is None:
        champion = store.aliased_version(name, CHAMPION, tracking_uri)
        if champion is None:
            raise NoChampionError(
                f"{name} has no {CHAMPION!r} version to start from: run the training pipeline first "
                "(pipelines.training.training_pipeline), then the prompt refresh, the tuning run or the batch "
                "recommendations")
        version = champion.version
    return str(version)


@contextmanager
def _bundle(name: str, version: str | int | None, tracking_uri: str | None) -> Iterator[tuple[Any, dict[str, Path]]]:
    """(the model version, its bundle files by name) of ``version`` (None: the champion), downloaded into a
    temporary folder that lives as long as the context."""
    version = _resolve(name, version, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        # every stored file checked against the version's manifest before anything reads one (IntegrityError)
        mv, local, checked = store.download_verified(name, version, tmp, tracking_uri)
        files = {p.name: p for p in local.rglob("*") if p.name in BUNDLE_FILES}
        missing = set(BUNDLE_FILES) - set(files)
        if missing:
            raise FileNotFoundError(f"{name} v{version} lacks {sorted(missing)}: not a registered recommender")
        if not checked:
            _check_legacy_weights(name, mv, files)
        yield mv, files


def _check_legacy_weights(name: str, mv: Any, files: dict[str, Path]) -> None:
    """A version registered before integrity manifests: compare a self-contained bundle's weights with the
    version's ``weights_sha256`` tag (a bundle that stores only tuned modules is checked through its base)."""
    from safetensors.torch import load_file

    recorded = mv.tags.get(WEIGHTS_TAG)
    if not recorded or json.loads(files["model.json"].read_text()).get("base"):
        return
    actual = weights_digest(load_file(str(files["weights.safetensors"])))
    if actual != recorded:
        raise IntegrityError(f"{name} v{mv.version} refused: weights check (sha256 of the stored weights against "
                             f"the version's tag {WEIGHTS_TAG}) failed: weights.safetensors digests to "
                             f"{actual[:16]}… but the tag records {recorded[:16]}…")


def load_version(name: str, version: str | int | None = None, tracking_uri: str | None = None) -> ChampionBase:
    """Version ``version`` of ``name`` (None: the champion) with its weights, config and vocabularies.  Raises
    NoChampionError when no version is named and ``name`` has no champion."""
    from safetensors.torch import load_file

    with _bundle(name, version, tracking_uri) as (mv, files):
        version = str(mv.version)
        meta = json.loads(files["model.json"].read_text())
        item_ids = json.loads(files["items.json"].read_text())
        state = {k: v.clone() for k, v in load_file(str(files["weights.safetensors"])).items()}
    model = TrainedModel(architecture=meta["architecture"], method=meta.get("method"), config=meta["config"],
                         state_dict=state)
    loaded = ChampionBase(name=name, version=version, run_id=mv.run_id, model=model,
                          behavior_names=list(meta["behavior_names"]),
                          target_behaviors=list(meta["target_behaviors"]), item_ids=[str(x) for x in item_ids],
                          tags=dict(mv.tags))
    logger.info("loaded %s v%s (%s, %d items)", name, version, loaded.architecture, len(item_ids) - 1)
    return loaded


@dataclass
class ServedVersion:
    """A registered version loaded as the served model: its ``ServedModel`` and where it is registered."""

    name: str
    version: str
    run_id: str
    recommender: ServedModel
    tags: dict = field(default_factory=dict)

    def describe(self) -> dict:
        r = self.recommender
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "architecture": self.tags.get("architecture"), "method": self.tags.get("method"),
                "n_items": len(r.item_ids) - 1, "history_items": r.history_items,
                "profile_fields": list(r.profile_fields)}


def load_served(name: str, version: str | int | None = None, tracking_uri: str | None = None,
                device: str = "cpu") -> ServedVersion:
    """Version ``version`` of ``name`` (None: the champion) as the served pyfunc loads it: a ``ServedModel`` over
    the version's bundle, with a frozen base's weights fetched from the registry (digest checked)."""
    with _bundle(name, version, tracking_uri) as (mv, files):
        version = str(mv.version)
        meta = json.loads(files["model.json"].read_text())
        base = store.fetch_base_weights(meta["base"], tracking_uri) if meta.get("base") else None
        recommender = ServedModel(files["weights.safetensors"], files["model.json"], files["items.json"],
                                  device=device, base_weights=base)
    logger.info("loaded %s v%s for serving (%d items)", name, version, len(recommender.item_ids) - 1)
    return ServedVersion(name=name, version=version, run_id=mv.run_id, recommender=recommender, tags=dict(mv.tags))
