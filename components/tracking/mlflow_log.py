"""Small MLflow helpers that log into the active run (the one ZenML's MLflow tracker opened for the step).

Without an active run (a component used outside a tracked step) they log a debug line and do nothing, so the
components stay usable in notebooks and tests.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

logger = logging.getLogger(__name__)


#: MLflow 3's UI picks an experiment's landing view from this tag; without it, an experiment opens on the GenAI
#: overview (traces, tokens).  The value the UI knows for model training (the tag key and its values are the
#: UI's: mlflow/server/js, ``ExperimentKind``).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The dataset digest MLflow keeps (``datasets.digest`` is 36 characters) and the input tag with the whole one.
DIGEST_CHARS = 36
FINGERPRINT_TAG = "mbprompt.input_fingerprint"
_kind_checked: set[tuple[str, str]] = set()  # (tracking URI, experiment id) already checked in this process


def active() -> bool:
    run = mlflow.active_run()
    if run is None:
        logger.debug("no active MLflow run: nothing logged")
        return False
    mark_training_experiment(run.info.experiment_id)
    return True


def mark_training_experiment(experiment_id: str, client: MlflowClient | None = None) -> None:
    """Tag the experiment as a model-training one (``EXPERIMENT_KIND_TAG``) unless it already has a kind: the
    UI then opens it on its training runs.  Once per experiment and process; never raises."""
    key = (mlflow.get_tracking_uri(), str(experiment_id))
    if key in _kind_checked:
        return
    _kind_checked.add(key)
    try:
        client = client or MlflowClient()
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except Exception as e:  # e.g. a user without write permission on a shared server: the UI still works
        logger.warning("could not tag MLflow experiment %s with %s: %s", experiment_id, EXPERIMENT_KIND_TAG, e)


def log_dataset(source: str, digest: str, name: str, context: str = "training") -> None:
    """Link the run's input data (``mlflow.log_input``): a metadata-only dataset whose source is ``source`` (a raw
    path or URI; MLflow resolves its kind: local, s3, ...) and whose digest is ``digest`` (the input fingerprint).
    The UI lists it under the run's Datasets with ``context``."""
    if not active():
        return
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local sources, the same type
            warnings.simplefilter("ignore", UserWarning)
            src = resolve_dataset_source(source)
    except Exception:  # a path form MLflow has no source type for: keep it as plain metadata
        src = CodeDatasetSource({"raw_path": str(source)})
    # MLflow stores at most 36 characters of a digest (its SQL schema): the full fingerprint goes in an input tag.
    mlflow.log_input(MetaDataset(src, name=name, digest=digest[:DIGEST_CHARS]), context=context,
                     tags={FINGERPRINT_TAG: digest})


def start_system_metrics() -> bool:
    """Log MLflow system metrics (CPU, memory, disk, network, GPU) into the active run until it ends, as
    ``mlflow.start_run(log_system_metrics=True)`` would: the run here is started by the experiment tracker, so the
    monitor is registered where ``mlflow.end_run`` finishes it.  Sampling every 10 s unless
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` says otherwise.  True if a monitor was started."""
    if not active():
        return False
    import importlib.util

    from mlflow.tracking import fluent

    run_id = mlflow.active_run().info.run_id
    monitors = getattr(fluent, "run_id_to_system_metrics_monitor", None)
    if importlib.util.find_spec("psutil") is None:
        logger.warning("psutil is not installed: no MLflow system metrics")
        return False
    if monitors is not None and run_id in monitors:
        return False
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # resume_logging: the run is shared by the pipeline's tracked steps; steps continue after the last sample.
    monitor = SystemMetricsMonitor(run_id, resume_logging=True)
    if monitors is not None:
        monitors[run_id] = monitor  # mlflow.end_run() finishes it; without it the monitor stops with the run
    monitor.start()
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
