"""Batch recommendations through the real pipelines on real MovieLens-1M: the quickstart trained for one epoch,
then configs/batch_inference.quickstart.yaml with its output moved into a temp dir.  One row for each of the 6,040
users (the data cleaning keeps them all; a user it dropped would get the zero-shot answer), top-10 without the
user's own movies (ML-1M's history_items: excluded), counts, throughput and a sample in MLflow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from zenml.enums import ExecutionStatus

pytestmark = pytest.mark.slow  # a training and two batch pipeline runs on ML-1M

REPO = Path(__file__).resolve().parents[2]
ML1M = REPO / "data" / "ml-1m"
MODEL = "mbprompt-ml1m"


def _training_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    cfg["run_name"] = "test-batch-train-{date}-{time}"
    cfg["parameters"]["raw_path"] = str(ML1M)
    cfg["steps"]["pretrain"]["parameters"]["training"].update(epochs=1)
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _batch_config(tmp: Path, output: Path, **params) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "batch_inference.quickstart.yaml").read_text())
    cfg["run_name"] = f"test-batch-{output.name}-{{date}}-{{time}}"
    cfg["parameters"]["raw_path"] = str(ML1M)
    cfg["parameters"].update(params)
    cfg["steps"]["recommend_all"]["parameters"]["output_path"] = str(output)
    path = tmp / f"batch-{output.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def batch_run(zenml_env, tmp_path_factory):
    from pipelines.batch_inference import batch_inference_pipeline
    from pipelines.training import training_pipeline

    if not (ML1M / "ml-1m.inter").exists():
        pytest.fail(f"MovieLens-1M not found at {ML1M}: run `make data` (make test does)")
    tmp = tmp_path_factory.mktemp("batch")
    uri = zenml_env["tracking_uri"]
    client = MlflowClient(uri)
    train = training_pipeline.with_options(config_path=str(_training_config(tmp)))()
    assert train.status == ExecutionStatus.COMPLETED
    version = str(train.steps["register"].outputs["registration"][0].load()["version"])
    previous = client.get_registered_model(MODEL).aliases.get("champion")
    client.set_registered_model_alias(MODEL, "champion", version)  # this run's version, whatever ran before
    output = tmp / "recommendations" / "ml1m"
    run = batch_inference_pipeline.with_options(config_path=str(_batch_config(tmp, output)))()
    yield run, output, version, tmp
    client.set_registered_model_alias(MODEL, "champion", previous or version)


def test_one_row_per_ml1m_user_with_the_columns(batch_run):
    run, output, version, _ = batch_run
    assert run.status == ExecutionStatus.COMPLETED
    assert (output / "_SUCCESS").is_file() and not list(output.parent.glob(".*"))
    df = pd.read_parquet(output)
    assert list(df.columns) == ["user_id", "items", "scores", "model_name", "model_version", "generated_at"]
    assert len(df) == 6040 and df.user_id.is_unique
    inter = pd.read_csv(ML1M / "ml-1m.inter", sep="\t", usecols=[0, 1], names=["user", "item"], header=0)
    assert set(df.user_id) == set(inter.user)
    assert set(df.model_name) == {MODEL} and set(df.model_version) == {version}
    assert df.generated_at.nunique() == 1 and str(df.generated_at.dt.tz) == "UTC"
    assert (df["items"].map(len) == 10).all() and (df["scores"].map(len) == 10).all()
    assert df["scores"].map(lambda s: list(s) == sorted(s, reverse=True)).all()
    seen = inter.groupby("user")["item"].agg(set)
    catalogue = set(inter.item)
    for _, row in df.sample(200, random_state=0).iterrows():
        assert set(row["items"]) <= catalogue and not set(row["items"]) & seen[row["user_id"]]
    assert len(pd.read_parquet(output).drop_duplicates("user_id")) == 6040
    assert len(list(output.glob("part-*.parquet"))) == 4  # chunk_size 2000


def test_counts_throughput_and_sample_in_mlflow(batch_run, zenml_env):
    run, _, version, _ = batch_run
    report = run.steps["recommend_all"].outputs["batch_report"][0].load()
    assert report["users"] == report["rows"] == 6040 and report["model_version"] == version
    assert report["histories"]["users_without_history"] == 0 and report["histories"]["events_used"] > 990_000
    client = MlflowClient(zenml_env["tracking_uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"params.model_version = '{version}' and params.k = '10'")
    assert runs, "the batch step logged no MLflow run"
    metrics = runs[0].data.metrics
    assert metrics["batch_users"] == 6040 and metrics["batch_users_per_second"] > 0
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "batch")} >= {"batch/report.json",
                                                                                       "batch/sample.json"}


def test_a_pinned_version_and_no_champion(batch_run, zenml_env):
    from pipelines.batch_inference import batch_inference_pipeline

    _, _, version, tmp = batch_run
    output = tmp / "pinned"
    run = batch_inference_pipeline.with_options(config_path=str(_batch_config(
        tmp, output, registered_model={"name": MODEL, "version": int(version)})))()
    assert run.steps["ingest"].status == ExecutionStatus.CACHED
    assert set(pd.read_parquet(output).model_version) == {version}
    missing = tmp / "missing"
    with pytest.raises(Exception, match="run the training pipeline first"):
        batch_inference_pipeline.with_options(config_path=str(_batch_config(
            tmp, missing, registered_model={"name": "mbprompt-nothing-here"})))()
    assert not missing.exists() and not list(tmp.glob(".missing*"))
