"""Who wrote a checkpoint, and closing the runs a resumed training replaces.

A training step killed mid-run (SIGKILL, a lost node) never tells its trackers that it ended: its MLflow run and
its orchestrator's run stay "running" forever.  When the same training is run again it resumes from the last
checkpoint (``components.training.trainer``), and that is the moment the old runs are known to be dead.  So:

- every checkpoint stores a *writer record* (:func:`writer_record`): the MLflow run that was active when it was
  written, the process (host, pid) and whatever ids the bound *run identity providers* add (the steps bind one
  for ZenML's pipeline run and step run: ``steps/_runs.py``; this package imports no ZenML);
- on resume the trainer calls :func:`close_replaced` with the record of the checkpoint it restored: each run named
  there that is still running, and is not the current one, is marked FAILED, in MLflow here and by every bound
  *closer* elsewhere (ZenML).

A writer whose process still runs on this host is left alone (two live runs sharing a checkpoint folder are a
misconfiguration, not a killed run); so is a run that already ended.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

import mlflow
from mlflow import MlflowClient

logger = logging.getLogger(__name__)

#: MLflow run tag set on a run closed here: the id of the run that resumed from its checkpoint.
REPLACED_BY_TAG = "mbprompt.replaced_by"
#: Why a closed run ended (MLflow run tag and ZenML status reason).
REASON = "killed: its checkpoint was resumed by a later run"

#: name -> function returning extra ids of the current run (e.g. {"zenml_run_id": ..., "zenml_step_run_id": ...}).
_providers: dict[str, Callable[[], dict[str, str]]] = {}
#: name -> function(writer record, current record) closing what it knows in the writer record; returns what it closed.
_closers: dict[str, Callable[[dict, dict], list[str]]] = {}


def bind(name: str, provider: Callable[[], dict[str, str]],
         closer: Callable[[dict, dict], list[str]] | None = None) -> None:
    """Register (or replace, by ``name``) a provider of run ids and, optionally, the closer of those runs."""
    _providers[name] = provider
    if closer is not None:
        _closers[name] = closer


def unbind(name: str) -> None:
    _providers.pop(name, None)
    _closers.pop(name, None)


def writer_record() -> dict:
    """The ids of the run writing a checkpoint now: plain strings and ints only (checkpoints load with
    ``weights_only=True``)."""
    run = mlflow.active_run()
    record: dict = {"host": socket.gethostname(), "pid": os.getpid(), "written_at": time.time(),
                    "mlflow_run_id": run.info.run_id if run is not None else None}
    for name, provider in _providers.items():
        try:
            record.update({k: str(v) for k, v in (provider() or {}).items() if v is not None})
        except Exception as e:  # bookkeeping must never break training
            logger.warning("run id provider %r failed (%s): the checkpoint does not record its ids", name, e)
    return record


def _writer_alive(writer: dict) -> bool:
    """True when the writer's process runs on this host now (and is not this process)."""
    pid = writer.get("pid")
    if writer.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def close_mlflow_run(run_id: str | None, replaced_by: str | None, client: MlflowClient | None = None) -> bool:
    """Mark the MLflow run ``run_id`` FAILED if it is still RUNNING and is not ``replaced_by``; True if closed."""
    if not run_id or run_id == replaced_by:
        return False
    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception as e:  # deleted, or another tracking store
        logger.warning("MLflow run %s that wrote the resumed checkpoint cannot be read (%s); not closed", run_id, e)
        return False
    if run.info.status != "RUNNING":
        return False
    client.set_tag(run_id, REPLACED_BY_TAG, replaced_by or "")
    client.set_tag(run_id, "mbprompt.end_reason", REASON)
    client.set_terminated(run_id, "FAILED")
    logger.info("MLflow run %s was still RUNNING: marked FAILED (%s)", run_id, REASON)
    return True


def close_replaced(writer: dict | None) -> list[str]:
    """Close the runs named in the writer record of a resumed checkpoint that are still running; returns what was
    closed (``"mlflow:<id>"`` and the closers' own labels).  Never raises: a failure is logged as a warning."""
    if not writer:
        return []
    if _writer_alive(writer):
        logger.warning("the checkpoint's writer (pid %s on %s) is still running: its runs are left as they are",
                       writer.get("pid"), writer.get("host"))
        return []
    current = writer_record()
    closed: list[str] = []
    try:
        if close_mlflow_run(writer.get("mlflow_run_id"), current.get("mlflow_run_id")):
            closed.append(f"mlflow:{writer['mlflow_run_id']}")
    except Exception as e:
        logger.warning("could not close MLflow run %s: %s", writer.get("mlflow_run_id"), e)
    for name, closer in list(_closers.items()):
        try:
            closed.extend(closer(writer, current))
        except Exception as e:
            logger.warning("closer %r failed on %s: %s", name, writer, e)
    return closed
