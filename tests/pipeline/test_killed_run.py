"""Issue 14, item 5: a killed training run is closed when a later run resumes from its checkpoint.

Two child processes run the tiny pipeline of killed_run_pipeline.py on the session's real ZenML store and MLflow
SQLite store: the first is killed with SIGKILL right after epoch 1's checkpoint (its ZenML run, step run and MLflow
run stay "running", as after a lost node), the second resumes from that checkpoint and marks them FAILED.  The
second run also shows the run bookkeeping of item 7: its input data linked in MLflow, system metrics, the
experiment tagged as a training one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus

from components.data.fingerprint import fingerprint
from components.tracking import mlflow_log, runs

pytestmark = pytest.mark.slow  # two pipeline runs in child processes (~40 s on 2 cores)

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "killed_run_pipeline"


def run_child(raw_path: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]; "
            "from pipeline.killed_run_pipeline import main; main()")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5",
           "ZENML_LOGGING_VERBOSITY": "INFO"}
    return subprocess.run([sys.executable, "-c", code, str(raw_path), *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def pipeline_runs() -> list:
    return Client().list_pipeline_runs(pipeline=PIPELINE, sort_by="asc:created", size=50).items


@pytest.fixture(scope="module")
def killed_and_resumed(zenml_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("killed-run")
    raw = tmp / "events.csv"
    raw.write_text("user,item,behavior,timestamp\n1,2,buy,1700000000\n")
    client = MlflowClient(zenml_env["tracking_uri"])
    if client.get_experiment_by_name(PIPELINE) is None:  # artifacts in the temp dir, not ./mlruns
        client.create_experiment(PIPELINE, artifact_location=(tmp / "artifacts").as_uri())
    before = {r.id for r in pipeline_runs()}

    killed = run_child(raw, tmp, "--kill-after-checkpoint")
    assert killed.returncode == -signal.SIGKILL, (
        f"the first run should die of SIGKILL after its first checkpoint; exit {killed.returncode}\n"
        f"{killed.stdout[-3000:]}\n{killed.stderr[-3000:]}")
    new = [r for r in pipeline_runs() if r.id not in before]
    assert len(new) == 1, f"expected the killed run in the ZenML store, found {len(new)} new runs"
    killed_run = Client().get_pipeline_run(new[0].id)
    state_after_kill = {"run": killed_run.status, "step": killed_run.steps["pretrain"].status}

    resumed = run_child(raw, tmp)
    assert resumed.returncode == 0, f"the resumed run failed:\n{resumed.stdout[-3000:]}\n{resumed.stderr[-5000:]}"
    resumed_run = Client().get_pipeline_run([r for r in pipeline_runs() if r.id not in before][-1].id)
    return {"killed": Client().get_pipeline_run(killed_run.id), "resumed": resumed_run, "after_kill": state_after_kill,
            "client": client, "raw": raw, "log": resumed.stdout + resumed.stderr}


def mlflow_run_of(client: MlflowClient, zenml_run) -> str:
    """The MLflow run of a ZenML pipeline run (ZenML's tracker names it after the pipeline run)."""
    found = client.search_runs([client.get_experiment_by_name(PIPELINE).experiment_id],
                               filter_string=f"tags.mlflow.runName = '{zenml_run.name}'")
    assert len(found) == 1, f"{len(found)} MLflow runs named {zenml_run.name}"
    return found[0].info.run_id


def test_a_killed_run_stays_running_until_a_resume_closes_it(killed_and_resumed):
    after_kill, killed, resumed = killed_and_resumed["after_kill"], killed_and_resumed["killed"], \
        killed_and_resumed["resumed"]
    client = killed_and_resumed["client"]
    # Right after SIGKILL nothing had closed the runs: this is what the issue saw.
    assert not after_kill["run"].is_finished and not after_kill["step"].is_finished, after_kill
    killed_mlflow = mlflow_run_of(client, killed)
    resumed_mlflow = mlflow_run_of(client, resumed)
    # The resumed run completed, from the checkpoint: it trained epochs 2 and 3 only.
    assert resumed.status == ExecutionStatus.COMPLETED
    assert [m.step for m in client.get_metric_history(resumed_mlflow, "epoch/loss")] == [2, 3]
    # ... and closed the killed run's ZenML pipeline run, step run and MLflow run.
    assert killed.status == ExecutionStatus.FAILED, killed.status
    assert killed.steps["pretrain"].status == ExecutionStatus.FAILED
    assert runs.REASON in (killed.get_body().status_reason or ""), killed.get_body().status_reason
    old = client.get_run(killed_mlflow)
    assert old.info.status == "FAILED" and old.info.end_time is not None
    assert old.data.tags[runs.REPLACED_BY_TAG] == resumed_mlflow
    assert client.get_run(resumed_mlflow).info.status == "FINISHED"


def test_the_checkpoint_names_the_runs_that_wrote_it(killed_and_resumed):
    resumed = killed_and_resumed["resumed"]
    ckpts = sorted((Path(Client().root) / ".checkpoints").rglob("checkpoint.pt"), key=lambda p: p.stat().st_mtime)
    assert ckpts, "no checkpoint under the ZenML repository's .checkpoints"
    writer = torch.load(ckpts[-1], weights_only=True)["writer"]
    assert writer["zenml_run_id"] == str(resumed.id)
    assert writer["zenml_step_run_id"] == str(resumed.steps["pretrain"].id)
    assert writer["mlflow_run_id"] == mlflow_run_of(killed_and_resumed["client"], resumed)


def test_the_training_run_links_its_data_and_logs_system_metrics(killed_and_resumed):
    client, raw = killed_and_resumed["client"], killed_and_resumed["raw"]
    run = client.get_run(mlflow_run_of(client, killed_and_resumed["resumed"]))
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1, inputs
    dataset, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert dataset.digest == fingerprint(raw)[:mlflow_log.DIGEST_CHARS]
    assert tags[mlflow_log.FINGERPRINT_TAG] == fingerprint(raw)
    assert tags["mlflow.data.context"] == "training"
    assert str(raw) in dataset.source
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags.get(mlflow_log.EXPERIMENT_KIND_TAG) == mlflow_log.EXPERIMENT_KIND
    assert "Failed to disable MLflow autologging" not in killed_and_resumed["log"]
