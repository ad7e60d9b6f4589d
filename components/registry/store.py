"""Registry look-ups and downloads that need no model code (so serving, the drift gate and tuning's efficiency
figures can use them without importing the models): the version an alias points at, a version by weights digest,
a version's files, a frozen base's weights, the champion's training data profile, the fine-tuning reference run.

``tracking_uri`` None means MLflow's current tracking URI (the one ZenML's tracker set for the step).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.registry import integrity
from components.registry.names import CHAMPION, PROFILE_TAG, WEIGHTS_TAG
from components.tracking import mlflow_log

logger = logging.getLogger(__name__)


def aliased_version(name: str, alias: str = CHAMPION, tracking_uri: str | None = None) -> ModelVersion | None:
    """The version of ``name`` that ``alias`` points at; None when the model or the alias does not exist."""
    try:
        return MlflowClient(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def find_version_by_digest(name: str, digest: str, tracking_uri: str | None = None) -> str | None:
    """The first registered version of ``name`` whose weights have this digest (tag ``weights_sha256``), if any."""
    try:
        versions = MlflowClient(tracking_uri).search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for mv in sorted(versions, key=lambda v: int(v.version)):
        if mv.tags.get(WEIGHTS_TAG) == digest:
            return str(mv.version)
    return None


def download_version(name: str, version: str | int, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """Download the files of ``name`` version ``version`` into ``dst``; returns the local folder."""
    # The version's storage location (not a models:/ URI, which would resolve against the global registry URI).
    location = MlflowClient(tracking_uri).get_model_version_download_uri(name, str(version))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst),
                                                    tracking_uri=tracking_uri or mlflow.get_tracking_uri()))


def download_verified(name: str, version: str | int, dst: str | Path,
                      tracking_uri: str | None = None) -> tuple[ModelVersion, Path, bool]:
    """Download ``name`` v``version`` into ``dst`` and check its files against the integrity manifest registered
    with it (components.registry.integrity; IntegrityError on a mismatch).  Returns (the model version, the
    local folder, whether a manifest was checked: False for a version registered before manifests)."""
    mv = MlflowClient(tracking_uri).get_model_version(name, str(version))
    local = download_version(name, version, dst, tracking_uri)
    checked = integrity.verify_version(name, mv, local, tracking_uri)
    return mv, local, checked


def fetch_base_weights(base: dict, tracking_uri: str | None = None) -> Path:
    """Download ``base`` (``{"name", "version"}``, a tuned model's frozen base), check it against its integrity
    manifest and return its ``weights.safetensors`` (in a temporary folder that lives as long as the process).
    The caller also compares the weights with the digest the tuned model recorded (``base["sha256"]``)."""
    _, local, _ = download_verified(base["name"], base["version"], tempfile.mkdtemp(prefix="mbprompt-base-"),
                                    tracking_uri)
    found = sorted(local.rglob("weights.safetensors"))
    if not found:
        raise FileNotFoundError(f"base {base['name']} v{base['version']} has no weights.safetensors: not a "
                                "registered recommender")
    return found[0]


def champion_profile(name: str, tracking_uri: str | None = None, *, alias: str = CHAMPION) -> dict | None:
    """The training data profile (components.data.drift.profile_data) stored with the version ``alias`` points
    at, or None when there is no such version or it was registered without a profile.  The returned dict gains
    ``registered_as`` (name, version, run id, alias): the drift gate names its reference with it."""
    version = aliased_version(name, alias, tracking_uri)
    if version is None:
        logger.info("drift gate: %s has no %r version yet", name, alias)
        return None
    path = version.tags.get(PROFILE_TAG)
    if not path:
        logger.info("drift gate: %s v%s (%s) was registered without a data profile", name, version.version, alias)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = MlflowClient(tracking_uri).download_artifacts(version.run_id, path, tmp)
        with open(local) as f:
            profile = json.load(f)
    profile["registered_as"] = {"name": name, "version": str(version.version), "run_id": version.run_id,
                                "alias": alias}
    return profile


def finetune_reference(method: str, data_digest: str, base_architecture: str) -> dict | None:
    """The latest run, in the active run's experiment, that fine-tuned the same base architecture on the same
    data (params logged by the prompt_tune step): its ``tune_seconds_per_epoch`` and ``run_id``, the reference of
    ``components.tuning.tune.efficiency``.  None for fine-tuning itself, without an active run, or when there is
    no such run."""
    if method == "finetune":
        return None
    return mlflow_log.latest_metrics_where({"tuning": "finetune", "data_digest": data_digest,
                                            "base_architecture": base_architecture}, ["tune_seconds_per_epoch"])
