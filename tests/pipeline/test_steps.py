"""The pipeline's steps called through their entrypoints (``<step>.entrypoint(...)``: the step's own function, with
no pipeline, cache or materializer around it) on the real Taobao head, with the parameters a pipeline run of
configs/taobao.yaml hands them (``components.data.prepare.stage_parameters``, checked against ZenML's compiled
pipeline below).

Inside a pipeline run a step has a ZenML step context (``log_metadata`` attaches to its step run, pretrain reads its
input artifact's id) and the MLflow tracker opens the MLflow run that ``components.tracking.mlflow_log`` writes into.
Here both are real, in the stores of ``zenml_env``: the step context of a step run of a one-step host pipeline run
once (its input is named ``sequences``, as pretrain's), entered around each call, and an MLflow run in an experiment
of its own.  What the steps log is read back from both stores.
"""

from __future__ import annotations

import inspect
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import mlflow
import numpy as np
import pyarrow as pa
import pytest
import yaml
from mlflow import MlflowClient
from zenml import pipeline, step
from zenml.client import Client
from zenml.steps.step_context import StepContext

from components.data import prepare
from components.data.clean import CleanResult
from components.data.sequences import SequenceDataset
from components.data.validation import DataValidationError, ValidationReport
from components.metrics.report import EvaluationReport
from components.models.trained import TrainedModel
from steps import clean, evaluate, fingerprint_input, ingest, pretrain, split, validate
from tests.models.synthetic import check_contract

REPO = Path(__file__).resolve().parents[2]
#: configs/taobao.yaml's window: 2017-11-25T00:00:00+08:00 .. 2017-12-03T23:59:59+08:00.
WINDOW = (1_511_539_200, 1_512_316_799)
#: The head: 84,476 lines, the last one truncated (skipped as malformed); 815 users.
HEAD_ROWS, HEAD_USERS = 84_475, 815


# ---- a real step context and a real MLflow run ------------------------------------------------------------------
@step
def host_input() -> Annotated[int, "sequences"]:
    return 0


@step
def host(sequences: int) -> None:
    """The step run whose context the entrypoints below run in."""


@pipeline(enable_cache=False)
def step_context_host() -> None:
    host(host_input())


@pytest.fixture(scope="module")
def host_run(zenml_env):
    run = step_context_host()
    return Client().get_pipeline_run(run.id)


@pytest.fixture(scope="module")
def experiment(zenml_env, tmp_path_factory):
    """An MLflow experiment of this module in the zenml_env store (artifacts in the temp dir), as the current
    tracking URI while the module runs."""
    before = mlflow.get_tracking_uri()
    uri = zenml_env["tracking_uri"]
    mlflow.set_tracking_uri(uri)
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts").as_uri()
    yield MlflowClient(uri).create_experiment(f"step-entrypoints-{uuid.uuid4().hex[:8]}", artifact_location=artifacts)
    mlflow.set_tracking_uri(before)


@contextmanager
def in_step(host_run, experiment: str):
    """Run the body as the host step runs: inside its step context, with an active MLflow run (yields its id)."""
    with StepContext(pipeline_run=host_run, step_run=host_run.steps["host"], output_materializers={},
                     output_artifact_uris={}, output_artifact_configs={}):
        with mlflow.start_run(experiment_id=experiment) as run:
            yield run.info.run_id


@dataclass
class Call:
    """A step entrypoint's output, the MLflow run it logged into and the host step run's metadata after it."""

    output: Any
    run_id: str
    metadata: dict


def call(step_, host_run, experiment: str, *args, **kwargs) -> Call:
    with in_step(host_run, experiment) as run_id:
        output = step_.entrypoint(*args, **kwargs)
    return Call(output, run_id, Client().get_run_step(host_run.steps["host"].id).run_metadata)


def logged(run_id: str):
    client = MlflowClient(mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    files = {a.path for folder in ("data", "evaluation") for a in client.list_artifacts(run_id, folder)}
    return run.data.params, run.data.metrics, files


# ---- the data steps on the Taobao head ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config(taobao_head) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "taobao.yaml").read_text())
    cfg["parameters"]["raw_path"] = str(taobao_head)
    return cfg


@pytest.fixture(scope="module")
def params(config) -> dict:
    return prepare.stage_parameters(config)


@pytest.fixture(scope="module")
def fingerprint(params) -> str:
    return fingerprint_input.entrypoint(params["ingest"]["raw_path"])


@pytest.fixture(scope="module")
def ingested(params, fingerprint, host_run, experiment) -> Call:
    return call(ingest, host_run, experiment, input_fingerprint=fingerprint, **params["ingest"])


@pytest.fixture(scope="module")
def cleaned(ingested, params, host_run, experiment) -> Call:
    interactions, _, _ = ingested.output
    return call(clean, host_run, experiment, interactions, **params["clean"])


@pytest.fixture(scope="module")
def sequences(ingested, cleaned, params, host_run, experiment) -> Call:
    _, profiles, _ = ingested.output
    return call(split, host_run, experiment, cleaned.output, profiles, **params["split"])


@pytest.mark.slow  # the first test here pays for the host pipeline run
def test_ingest_returns_the_canonical_tables_and_logs_its_report(ingested, fingerprint, taobao_head):
    interactions, profiles, report = ingested.output
    assert isinstance(interactions, pa.Table) and isinstance(profiles, pa.Table) and isinstance(report, dict)
    assert interactions.num_rows == report["rows"] == HEAD_ROWS and profiles.num_rows == 0
    assert report["malformed_rows"] == 1 and report["files"][0]["first_malformed"][0]["line"] == HEAD_ROWS + 1
    assert len(fingerprint) == 64
    assert ingested.metadata["rows"] == HEAD_ROWS and ingested.metadata["profiles"] == 0  # log_metadata
    logged_params, _, files = logged(ingested.run_id)
    assert logged_params == {"dataset": "taobao", "raw_path": str(taobao_head), "input_fingerprint": fingerprint[:16]}
    assert "data/ingest_report.json" in files


@pytest.mark.slow
def test_validate_passes_the_head_and_profiles_it(ingested, params, host_run, experiment):
    interactions, profiles, _ = ingested.output
    validated = call(validate, host_run, experiment, interactions, profiles, **params["validate"])
    report, profile = validated.output
    assert isinstance(report, ValidationReport) and report.success and report.rows == HEAD_ROWS
    assert {r["check"] for r in report.results} >= {"timestamp_in_window", "min_users"}
    assert isinstance(profile, dict) and profile
    assert {"data/validation.json", "data/validation.md"} <= logged(validated.run_id)[2]


@pytest.mark.slow
def test_validate_fails_on_bad_data_naming_file_column_and_expectation(config, taobao_head, tmp_path, host_run,
                                                                       experiment):
    """Every 20th row moved a month before the window (configs/taobao.yaml tolerates 1% outside it): the step stops
    naming the file, the column, the expectation and the count, and keeps the failed report as an artifact of its
    step run."""
    bad = tmp_path / "UserBehavior.csv"
    lines = taobao_head.read_text().splitlines()[:-1]  # without the truncated last line
    outside = moved = 0
    for i, line in enumerate(lines):
        fields = line.split(",")
        if not WINDOW[0] <= int(fields[4]) <= WINDOW[1]:
            outside += 1  # the head's own stragglers
        elif i % 20 == 0:
            lines[i] = ",".join(fields[:4] + [str(WINDOW[0] - 30 * 86_400)])
            moved += 1
    bad.write_text("\n".join(lines))
    bad_params = prepare.stage_parameters(config, raw_path=bad)
    raw = prepare.ingest(**bad_params["ingest"])
    with in_step(host_run, experiment) as run_id:
        with pytest.raises(DataValidationError) as err:
            validate.entrypoint(raw.interactions, raw.profiles, **bad_params["validate"])
    message = str(err.value)
    assert message.startswith(f"validation of {bad} failed: ")
    assert f"expect_column_values_to_be_between on column 'timestamp': {outside + moved:,} of {HEAD_ROWS:,} rows" \
        in message
    assert "data/validation.json" in logged(run_id)[2]
    failed = Client().get_run_step(host_run.steps["host"].id).outputs["validation_report_failed"]
    report = failed[-1].load()
    assert report.success is False and report.source == str(bad)


@pytest.mark.slow
def test_clean_drops_out_of_window_rows_and_logs_its_rules(cleaned):
    result = cleaned.output
    assert isinstance(result, CleanResult)
    assert result.report["rows_in"] == HEAD_ROWS and 0 < result.interactions.num_rows == result.report["rows_out"]
    assert result.report["rows_out"] < HEAD_ROWS  # a few rows of the head fall outside the window
    assert cleaned.metadata["rows_in"] == HEAD_ROWS and cleaned.metadata["rows_out"] == result.report["rows_out"]
    logged_params, _, files = logged(cleaned.run_id)
    assert logged_params["clean.min_user_events"] == "0" and "clean.time_window" in logged_params
    assert "data/clean_report.json" in files


@pytest.mark.slow
def test_split_is_what_sequences_from_config_builds(sequences, config):
    """The steps and ``prepare.sequences_from_config`` (DDP, benches, tests) build the same sequences."""
    data = sequences.output
    assert isinstance(data, SequenceDataset)
    check_contract(data)
    assert data.meta["cold_mode"] == "natural" and data.meta["history_items"] == "candidates"
    assert 0 < len(data.warm_users) < data.n_users <= HEAD_USERS and data.profile_fields == []
    again = prepare.sequences_from_config(config)
    for name in ("offsets", "items", "behaviors", "timestamps", "train_end", "warm_users", "cold_tune_users",
                 "cold_test_users", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name), err_msg=name)
    for name, ts in data.targets.items():
        for attr in ("users", "positions", "items", "negatives", "zero_shot", "repeat"):
            np.testing.assert_array_equal(getattr(again.targets[name], attr), getattr(ts, attr), err_msg=name)
    logged_params, _, files = logged(sequences.run_id)
    assert logged_params["split.seed"] == "42" and logged_params["split.cold_threshold"] == "5"
    assert "data/split.json" in files


# ---- training steps at a tiny budget ----------------------------------------------------------------------------
@pytest.mark.slow  # one epoch and both evaluation protocols over the head's catalogue
def test_pretrain_and_evaluate_return_their_artifacts_and_log_to_mlflow(sequences, host_run, experiment):
    data = sequences.output
    model = {"name": "sasrec", "max_len": 20, "hidden": 16, "n_layers": 1, "n_heads": 1}
    training = {"epochs": 1, "batch_size": 64, "lr": 0.001, "loss": "ce", "train_on": "all", "progress": False,
                "device": "cpu", "valid_protocols": ["sampled"]}
    with in_step(host_run, experiment) as run_id:
        trained = pretrain.entrypoint(data, seed=42, model=model, training=training)
        report = evaluate.entrypoint(trained, data, dataset="taobao", ks=[10])
    assert isinstance(trained, TrainedModel) and trained.architecture == "sasrec" and len(trained.history) == 1
    assert trained.config["n_items"] == data.n_items
    assert isinstance(report, EvaluationReport) and report.dataset == "taobao" and report.ks == [10]
    assert {trained.name, "popularity"} <= set(report.metrics)
    ndcg = report.metrics[trained.name]["test_sampled99_ndcg_at_10"]
    assert 0.0 <= ndcg <= 1.0
    logged_params, metrics, files = logged(run_id)
    assert logged_params["model.hidden"] == "16" and logged_params["training.epochs"] == "1"
    assert logged_params["seed"] == "42"
    assert "epoch/loss" in metrics and metrics["n_parameters"] == trained.info["n_parameters"]
    assert metrics["test_sampled99_ndcg_at_10"] == pytest.approx(ndcg)
    assert "popularity_test_sampled99_hr_at_10" in metrics
    assert {"evaluation/metrics.md", "evaluation/metrics.json"} <= files


# ---- the parameters: what ZenML hands the steps, and the defaults on both sides ----------------------------------
@pytest.mark.slow  # compiles the training pipeline once per config
@pytest.mark.parametrize("name", ["quickstart", "taobao", "generic", "ml1m.ppr_light", "training.k8s"])
def test_stage_parameters_are_what_the_compiled_pipeline_hands_the_steps(name, zenml_env):
    from pipelines.training import training_pipeline

    path = REPO / "configs" / f"{name}.yaml"
    pipeline = training_pipeline.with_options(config_path=str(path))
    # Prepare explicitly: create_snapshot skips preparing a pipeline that already holds invocations, and the
    # module's pipeline object holds those of whichever run prepared it earlier in the session (another config).
    pipeline.prepare()
    snapshot = pipeline.create_snapshot(name=f"stage-parameters-{name}-{uuid.uuid4().hex[:8]}")
    expected = prepare.stage_parameters(yaml.safe_load(path.read_text()))
    steps = {"ingest": ingest, "validate": validate, "clean": clean, "split": split}
    assert set(expected) == set(steps)
    for stage, kwargs in expected.items():
        # What the step function gets: its defaults, then what ZenML compiled (or what prepare hands it).
        defaults = {n: p.default for n, p in inspect.signature(steps[stage].entrypoint).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        compiled = {**defaults, **snapshot.step_configurations[stage].config.parameters}
        handed = {**defaults, **kwargs}
        for side in (compiled, handed):
            # validate's drift gate compares with the champion (of model_name): no part of the sequences
            side.pop("drift", None)
            side.pop("model_name", None)
        assert handed == compiled, stage


def test_steps_and_prepare_have_the_same_defaults():
    from pipelines.training import training_pipeline

    pairs = [(ingest, prepare.ingest), (validate, prepare.validate), (clean, prepare.clean),
             (split, prepare.split_config), (split, prepare.split)]
    for step_, function in pairs:
        mine = inspect.signature(step_.entrypoint).parameters
        theirs = inspect.signature(function).parameters
        shared = set(mine) & set(theirs)
        assert shared
        for name in shared:
            assert mine[name].default == theirs[name].default, (step_.name, name)
    seed = inspect.signature(training_pipeline.entrypoint).parameters["seed"].default
    assert seed == prepare.DEFAULT_SEED == inspect.signature(split.entrypoint).parameters["seed"].default
