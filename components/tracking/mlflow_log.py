"""Small MLflow helpers that log into the active run (the one ZenML's MLflow tracker opened for the step).

Without an active run (a component used outside a tracked step) they log a debug line and do nothing, so the
components stay usable in notebooks and tests.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow

logger = logging.getLogger(__name__)


def active() -> bool:
    if mlflow.active_run() is None:
        logger.debug("no active MLflow run: nothing logged")
        return False
    return True


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, default=str)
    return out


def log_params(params: dict, prefix: str = "") -> None:
    if active():
        flat = {k: ("None" if v is None else v) for k, v in _flatten(params, prefix).items()}
        existing = mlflow.active_run().data.params
        # MLflow refuses to change a logged param; a resumed run re-logging the same value is fine.
        mlflow.log_params({k: v for k, v in flat.items() if k not in existing})


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    if active():
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        mlflow.log_metrics(clean, step=step)


def log_text(text: str, artifact_file: str) -> None:
    if active():
        mlflow.log_text(text, artifact_file)


def log_dict(d: dict, artifact_file: str) -> None:
    if active():
        mlflow.log_dict(d, artifact_file)


def log_figure(fig, artifact_file: str) -> None:
    if active():
        mlflow.log_figure(fig, artifact_file)


def log_bytes(data: bytes, artifact_file: str) -> None:
    if active():
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / Path(artifact_file).name
            p.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            mlflow.log_artifact(str(p), None if parent == "." else parent)


def latest_metrics_where(params: dict[str, str], metric_keys: list[str]) -> dict[str, float] | None:
    """The named metrics of the most recent finished run, in the active run's experiment, whose params equal
    ``params`` (e.g. the fine-tuning run on the same data); None without an active run or without such a run."""
    if not active():
        return None
    run = mlflow.active_run()
    filt = " and ".join(f"params.`{k}` = '{v}'" for k, v in params.items())
    found = mlflow.search_runs(experiment_ids=[run.info.experiment_id], filter_string=filt,
                               order_by=["attributes.start_time DESC"], output_format="list", max_results=20)
    for r in found:
        if r.info.run_id != run.info.run_id and all(k in r.data.metrics for k in metric_keys):
            return {k: float(r.data.metrics[k]) for k in metric_keys} | {"run_id": r.info.run_id}
    return None
