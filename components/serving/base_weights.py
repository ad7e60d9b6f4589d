"""Fetch a registered base version's weights for a prompt-tuned model that stores only its tuned modules."""

from __future__ import annotations

import tempfile
from pathlib import Path


def fetch_base_weights(base: dict, tracking_uri: str | None = None) -> Path:
    """Download ``base`` (``{"name", "version"}``) from the MLflow registry the loader is pointed at and return
    its ``weights.safetensors`` (in a temporary folder that lives as long as the process)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    location = client.get_model_version_download_uri(base["name"], str(base["version"]))
    dst = tempfile.mkdtemp(prefix="mbprompt-base-")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=dst,
                                                     tracking_uri=tracking_uri or mlflow.get_tracking_uri()))
    found = sorted(local.rglob("weights.safetensors"))
    if not found:
        raise FileNotFoundError(f"base {base['name']} v{base['version']} has no weights.safetensors: not a "
                                "registered recommender")
    return found[0]
