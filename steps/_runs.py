"""The ZenML side of run bookkeeping, called from inside steps (one line each):

- ``track_training_run(context)`` at the start of a training step (pretrain, prompt_tune):
  1. binds this step's ZenML pipeline-run and step-run ids to the checkpoints the trainer writes, and a closer
     that marks them FAILED when a later run resumes from such a checkpoint while they still read "running" (a
     killed run; the MLflow half is ``components.tracking.runs``, which imports no ZenML);
  2. links the run's input data to the MLflow run (``mlflow.log_input``: source = the pipeline's ``raw_path``,
     digest = the ``fingerprint_input`` step's fingerprint, the given context);
  3. starts MLflow system metrics for the step (CPU, memory, disk, network, GPU).
- ``link_model_version(registration)`` in the register step: a ZenML Model version (ZenML's Model control plane)
  for the MLflow registered version, linked to this pipeline run, with the MLflow name, version, URI and run id as
  its metadata.

Every function logs a warning and carries on if its bookkeeping fails: it never fails the step.
"""

from __future__ import annotations

import logging
from uuid import UUID

import mlflow
from zenml import get_step_context, log_metadata
from zenml.client import Client
from zenml.enums import ExecutionStatus
from zenml.models import ModelVersionPipelineRunRequest, PipelineRunUpdate, StepRunUpdate
from zenml.utils.time_utils import utc_now

from components.tracking import mlflow_log
from components.tracking import runs as run_records

logger = logging.getLogger(__name__)

#: The step every pipeline starts with; its ``raw_path`` parameter and ``input_fingerprint`` output name the data.
FINGERPRINT_STEP, FINGERPRINT_OUTPUT = "fingerprint_input", "input_fingerprint"


# ---- killed runs ------------------------------------------------------------------------------------------------
def zenml_ids() -> dict[str, str]:
    """The running step's ZenML ids ({} outside a step)."""
    try:
        ctx = get_step_context()
    except RuntimeError:
        return {}
    return {"zenml_run_id": str(ctx.pipeline_run.id), "zenml_step_run_id": str(ctx.step_run.id),
            "zenml_run_name": ctx.pipeline_run.name}


def close_zenml_runs(writer: dict, current: dict) -> list[str]:
    """Mark the ZenML step run and pipeline run of ``writer`` FAILED if they are not finished (and are not the
    current run); returns ``["zenml-step:<id>", "zenml-run:<id>"]`` for what was closed."""
    run_id, step_id = writer.get("zenml_run_id"), writer.get("zenml_step_run_id")
    if not run_id or run_id == current.get("zenml_run_id"):
        return []
    client, closed = Client(), []
    reason = f"{run_records.REASON} ({current.get('zenml_run_name') or current.get('zenml_run_id')})"
    run_was_open = not client.get_pipeline_run(UUID(run_id), hydrate=False).status.is_finished
    if step_id:
        step = client.get_run_step(UUID(step_id), hydrate=False)
        if not step.status.is_finished:
            # A failed step also fails a static pipeline's run (ZenML derives its status from the steps) ...
            client.zen_store.update_run_step(UUID(step_id), StepRunUpdate(status=ExecutionStatus.FAILED,
                                                                          end_time=utc_now()))
            closed.append(f"zenml-step:{step_id}")
    if run_was_open:  # ... and this sets it outright (a dynamic pipeline's) and says why, FAILED -> FAILED included
        client.zen_store.update_run(UUID(run_id), PipelineRunUpdate(status=ExecutionStatus.FAILED,
                                                                    status_reason=reason))
        closed.append(f"zenml-run:{run_id}")
    if closed:
        logger.info("ZenML run %s (%s) was still running: marked FAILED (%s)", writer.get("zenml_run_name"),
                    run_id, reason)
    return closed


# ---- data linked to the MLflow run ------------------------------------------------------------------------------
def training_data() -> dict | None:
    """{"source", "digest", "name"} of this pipeline run's input: ``raw_path`` and the fingerprint of the
    ``fingerprint_input`` step, the ``dataset`` parameter as the name; None when the run has no such step."""
    run = get_step_context().pipeline_run
    step = Client().get_pipeline_run(run.id).steps.get(FINGERPRINT_STEP)
    if step is None or FINGERPRINT_OUTPUT not in step.outputs:
        return None
    raw_path = step.config.parameters.get("raw_path")
    digest = step.outputs[FINGERPRINT_OUTPUT][0].load()
    name = (run.config.parameters or {}).get("dataset") or str(raw_path)
    return {"source": str(raw_path), "digest": str(digest), "name": str(name)}


def track_training_run(context: str = "training") -> None:
    """Everything a training step's run records besides its own logging (the module docstring lists it)."""
    run_records.bind("zenml", zenml_ids, close_zenml_runs)
    try:
        data = training_data()
        if data is not None:
            mlflow_log.log_dataset(data["source"], data["digest"], data["name"], context=context)
    except Exception as e:
        logger.warning("could not link the input data to the MLflow run: %s", e)
    try:
        mlflow_log.start_system_metrics()
    except Exception as e:
        logger.warning("could not start MLflow system metrics: %s", e)


# ---- ZenML model version for the MLflow registered version -------------------------------------------------------
def model_version_name(mlflow_version: str | int) -> str:
    return f"mlflow-v{mlflow_version}"


def link_model_version(registration: dict) -> str | None:
    """Create (or find) the ZenML Model ``registration["name"]`` and its version ``mlflow-v<version>``, link it to
    this pipeline run and record the MLflow name, version, URI and run id on it; returns the ZenML version's name."""
    try:
        name, version = registration["name"], str(registration["version"])
        client = Client()
        try:
            model = client.get_model(name)
        except KeyError:
            # save_models_to_registry=False: the MLflow registry already holds the model; ZenML only links it.
            model = client.create_model(name, description="Registered in MLflow as models:/" + name,
                                        save_models_to_registry=False)
        vname = model_version_name(version)
        try:
            mv = client.get_model_version(model.id, vname)
        except KeyError:
            mv = client.create_model_version(model.id, name=vname,
                                             description=f"MLflow registered model {name} version {version}")
        run_id = get_step_context().pipeline_run.id
        client.zen_store.create_model_version_pipeline_run_link(
            ModelVersionPipelineRunRequest(model_version=mv.id, pipeline_run=run_id))
        active = mlflow.active_run()
        log_metadata({"mlflow_model_name": name, "mlflow_model_version": version,
                      "mlflow_model_uri": registration.get("model_uri", f"models:/{name}/{version}"),
                      "mlflow_run_id": active.info.run_id if active else "",
                      "mlflow_tracking_uri": mlflow.get_tracking_uri(),
                      "champion": bool(registration.get("champion"))},
                     model_version_id=mv.id)
        return vname
    except Exception as e:
        logger.warning("could not link a ZenML model version to %s: %s", registration.get("model_uri"), e)
        return None
