"""A registered version as a trained model: ``load_version`` downloads the files ``register_recommender`` stored
with it (``weights.safetensors``, ``model.json``, ``items.json``) and returns a
``components.training.refresh.ChampionBase``: the TrainedModel, its vocabularies and where it is registered.
Without a version it loads the champion: the base the daily refresh re-tunes and prompt tuning starts from."""

from __future__ import annotations

import json
import logging
import tempfile

from mlflow import MlflowClient

from components.models.trained import TrainedModel
from components.registry import store
from components.registry.names import BUNDLE_FILES, CHAMPION
from components.training.refresh import ChampionBase

logger = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """The registered model has no champion to start from."""


def load_version(name: str, version: str | int | None = None, tracking_uri: str | None = None) -> ChampionBase:
    """Version ``version`` of ``name`` (None: the champion) with its weights, config and vocabularies.  Raises
    NoChampionError when no version is named and ``name`` has no champion."""
    from safetensors.torch import load_file

    if version is None:
        champion = store.aliased_version(name, CHAMPION, tracking_uri)
        if champion is None:
            raise NoChampionError(
                f"{name} has no {CHAMPION!r} version to start from: run the training pipeline first "
                "(pipelines.training.training_pipeline), then the prompt refresh or the tuning run")
        version = champion.version
    version = str(version)
    mv = MlflowClient(tracking_uri).get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = store.download_version(name, version, tmp, tracking_uri)
        files = {p.name: p for p in local.rglob("*") if p.name in BUNDLE_FILES}
        missing = set(BUNDLE_FILES) - set(files)
        if missing:
            raise FileNotFoundError(f"{name} v{version} lacks {sorted(missing)}: not a registered recommender")
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
