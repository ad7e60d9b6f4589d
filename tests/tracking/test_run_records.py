"""Run bookkeeping without a pipeline (issue 14, items 5 and 7): closing the runs a resume replaces, the
experiment kind tag, the dataset link, the autolog warning filter and the training-curve figure.  Real MLflow
SQLite stores in temp dirs."""

from __future__ import annotations

import logging
import subprocess

import mlflow
import pytest
from mlflow import MlflowClient

from components.metrics.plots import figure_png, metric_groups, training_curves
from components.tracking import mlflow_log, runs


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def store(tracking_uri, tmp_path):
    """(client, a fresh experiment of this test), the store as the current tracking URI."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment(f"runs-{tmp_path.name}", artifact_location=(tmp_path / "artifacts").as_uri())
    yield client, exp
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri("")
    runs.unbind("test")


def test_close_mlflow_run_fails_a_running_run_only(store):
    client, exp = store
    running = client.create_run(exp).info.run_id
    finished = client.create_run(exp).info.run_id
    client.set_terminated(finished, "FINISHED")
    assert runs.close_mlflow_run(running, "new-run", client)
    assert not runs.close_mlflow_run(finished, "new-run", client)
    assert not runs.close_mlflow_run("new-run", "new-run", client)  # the current run is never closed
    closed = client.get_run(running)
    assert closed.info.status == "FAILED" and closed.data.tags[runs.REPLACED_BY_TAG] == "new-run"
    assert client.get_run(finished).info.status == "FINISHED"


def test_writer_record_names_the_active_run_and_the_bound_ids(store, caplog):
    client, exp = store
    runs.bind("test", lambda: {"zenml_run_id": "r1", "zenml_step_run_id": "s1"})
    with mlflow.start_run(experiment_id=exp) as run:
        record = runs.writer_record()
    assert record["mlflow_run_id"] == run.info.run_id
    assert record["zenml_run_id"] == "r1" and record["zenml_step_run_id"] == "s1"
    assert all(isinstance(v, (str, int, float)) for v in record.values())  # loadable with weights_only=True

    def broken() -> dict:
        raise RuntimeError("no store")

    runs.bind("test", broken)
    with caplog.at_level(logging.WARNING):
        record = runs.writer_record()
    assert "zenml_run_id" not in record and "no store" in caplog.text


def test_close_replaced_closes_a_dead_writers_runs_and_leaves_a_live_ones(store, caplog):
    client, exp = store
    closed_by_closer = []
    runs.bind("test", dict, lambda writer, current: closed_by_closer.append(writer["zenml_run_id"]) or ["zenml"])
    old = client.create_run(exp).info.run_id
    alive = subprocess.Popen(["sleep", "60"])
    try:
        writer = {**runs.writer_record(), "pid": alive.pid, "mlflow_run_id": old, "zenml_run_id": "old"}
        with caplog.at_level(logging.WARNING):
            assert runs.close_replaced(writer) == []
        assert "still running" in caplog.text and client.get_run(old).info.status == "RUNNING"
    finally:
        alive.kill()
        alive.wait()
    assert runs.close_replaced(writer) == [f"mlflow:{old}", "zenml"]
    assert client.get_run(old).info.status == "FAILED" and closed_by_closer == ["old"]
    assert runs.close_replaced(None) == [] and runs.close_replaced({}) == []


def test_training_experiments_are_tagged_once_and_an_existing_kind_is_kept(store):
    client, exp = store
    other = client.create_experiment(f"genai-{exp}", tags={mlflow_log.EXPERIMENT_KIND_TAG: "genai_development"})
    with mlflow.start_run(experiment_id=exp):
        assert mlflow_log.active()
    mlflow_log.mark_training_experiment(other, client)
    assert client.get_experiment(exp).tags[mlflow_log.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment(other).tags[mlflow_log.EXPERIMENT_KIND_TAG] == "genai_development"


def test_log_dataset_links_the_raw_path_with_the_fingerprint(store, tmp_path):
    client, exp = store
    raw = tmp_path / "UserBehavior.csv"
    raw.write_text("1,2,3,pv,1511539200\n")
    fingerprint = "ab" * 32  # sha256 hex: longer than the 36 characters MLflow keeps
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow_log.log_dataset(str(raw), fingerprint, "taobao", context="training")
    (inp,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert inp.dataset.name == "taobao" and inp.dataset.digest == fingerprint[:36]
    assert inp.dataset.source_type == "local" and str(raw) in inp.dataset.source
    assert tags == {"mlflow.data.context": "training", mlflow_log.FINGERPRINT_TAG: fingerprint}


def test_the_absent_framework_autolog_warning_is_dropped_and_others_kept(caplog):
    import steps._common as common

    log = logging.getLogger(common.MLFLOW_TRACKER_LOGGER)
    assert any(isinstance(f, common._AbsentAutologFilter) for f in log.filters)
    with caplog.at_level(logging.WARNING, logger=common.MLFLOW_TRACKER_LOGGER):
        log.warning("Failed to disable MLflow autologging for the following frameworks: ['fastai'].")
        log.warning("Failed to disable MLflow autologging for the following frameworks: ['fastai', 'sklearn'].")
        log.warning("something else")
    messages = [r.getMessage() for r in caplog.records]
    assert not any(m.endswith("['fastai'].") for m in messages)
    assert any("'sklearn'" in m for m in messages) and "something else" in messages


def test_training_curves_are_one_readable_column_with_a_panel_per_protocol():
    history = [{"epoch": e, "loss": 3.0 / e, "valid_sampled99_hr_at_10": 0.1 * e,
                "valid_sampled99_ndcg_at_10": 0.05 * e, "valid_full_hr_at_10": 0.02 * e,
                "valid_full_ndcg_at_10": 0.01 * e, "valid_full_mrr": 0.01} for e in range(1, 5)]
    assert metric_groups(history) == {"sampled99": ["valid_sampled99_hr_at_10", "valid_sampled99_ndcg_at_10"],
                                      "full": ["valid_full_hr_at_10", "valid_full_ndcg_at_10"]}
    fig = training_curves(history, title="t", best_epoch=3)
    assert len(fig.axes) == 3 and [len(ax.get_lines()) for ax in fig.axes] == [2, 3, 3]  # curves + the best epoch
    width, height = fig.get_size_inches() * 110
    assert width <= 800 and height >= width  # the old figure: 5 panels in one row, 2475 x 374 px
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
