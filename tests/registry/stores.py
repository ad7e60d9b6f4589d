"""A fresh MLflow SQLite store in a temp dir, made MLflow's current tracking URI for as long as it is used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient


@contextmanager
def mlflow_store(tmp_path: Path, experiment_name: str) -> Iterator[tuple[str, str]]:
    """(tracking URI, experiment id) of a store under ``tmp_path`` with its artifacts there too; the previous
    tracking URI is restored on exit."""
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        yield uri, MlflowClient(uri).create_experiment(experiment_name,
                                                       artifact_location=(tmp_path / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(before)
