"""Prompt tuning through the real pipeline on real MovieLens-1M: configs/ml1m.<method>.yaml at a small budget,
a real ZenML store and a real MLflow SQLite store.  Checks the wiring, the registry layout (one base, small
prompt-only versions that name it) and serving; how well each method learns is tested in tests/tuning."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file
from zenml.enums import ExecutionStatus

pytestmark = pytest.mark.slow  # four ML-1M pipeline runs

REPO = Path(__file__).resolve().parents[2]
ML1M = REPO / "data" / "ml-1m"
BASE = "mbprompt-ml1m"


def _config(tmp: Path, method: str, **params) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / f"ml1m.{method}.yaml").read_text())
    cfg["run_name"] = f"test-tuning-{method}-{{date}}-{{time}}"
    cfg["parameters"]["raw_path"] = str(ML1M)
    cfg["parameters"].update(params)
    cfg["steps"]["pretrain"]["parameters"]["training"].update(epochs=2)
    cfg["steps"]["prompt_tune"]["parameters"]["training"].update(epochs=3)
    path = tmp / f"{method}-{len(params)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path):
    from pipelines.training import training_pipeline

    return training_pipeline.with_options(config_path=str(config))()


@pytest.fixture(scope="module")
def runs(zenml_env, tmp_path_factory):
    if not (ML1M / "ml-1m.inter").exists():
        pytest.fail(f"MovieLens-1M not found at {ML1M}: run `make data` (make test does)")
    mlflow.set_tracking_uri(zenml_env["tracking_uri"])
    client = MlflowClient(zenml_env["tracking_uri"])

    def n_base_versions() -> int:
        return len(client.search_model_versions(f"name='{BASE}'"))

    tmp = tmp_path_factory.mktemp("tuning")
    before = n_base_versions()
    out = {m: _run(_config(tmp, m)) for m in ("finetune", "ppr_light", "cpl")}
    after_three = n_base_versions()
    # Tuning again from the registered base: no pre-training in this run at all.
    out["pomrec_from_registry"] = _run(_config(tmp, "pomrec", base_model={"name": BASE}))
    return out, client, before, after_three


def _latest(client: MlflowClient, name: str):
    return max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def test_three_tuned_variants_share_one_registered_base(runs):
    out, client, before, after_three = runs
    assert all(r.status == ExecutionStatus.COMPLETED for r in out.values())
    assert after_three == before + 1  # the base was registered once, then reused by digest
    base_version = _latest(client, BASE)
    for method in ("finetune", "ppr_light", "cpl"):
        mv = _latest(client, f"{BASE}-{method}")
        assert mv.tags["base_model"] == BASE and mv.tags["base_version"] == str(base_version.version)
        assert mv.tags["selection_metric"].startswith("cold_valid_sampled99")


def test_frozen_variants_store_only_their_own_modules(runs, tmp_path, zenml_env):
    _, client, _, _ = runs
    mlflow.set_tracking_uri(zenml_env["tracking_uri"])

    def weights(name: str) -> dict:
        mv = _latest(client, name)
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, mv.version), dst_path=str(tmp_path / name)))
        return load_file(str(next(local.rglob("weights.safetensors"))))

    base = weights(BASE)
    for method in ("ppr_light", "cpl"):
        own = weights(f"{BASE}-{method}")
        assert own and not any(k.startswith("base.") for k in own), method
        n_own, n_base = sum(t.numel() for t in own.values()), sum(t.numel() for t in base.values())
        assert n_own < 0.1 * n_base, (method, n_own, n_base)
    finetuned = weights(f"{BASE}-finetune")  # fine-tuning changed the base: its bundle carries every weight
    assert {f"base.{k}" for k in base} <= set(finetuned)


def test_tuning_runs_log_their_efficiency_against_fine_tuning(runs):
    _, client, _, _ = runs
    experiments = [e.experiment_id for e in client.search_experiments()]
    for method in ("ppr_light", "cpl"):
        mv = _latest(client, f"{BASE}-{method}")
        found = client.search_runs(experiments, filter_string=f"params.tuning = '{method}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        metrics = found[0].data.metrics
        for key in ("n_tuned_parameters", "n_parameters", "tuned_share", "tuned_vs_finetune", "tune_seconds",
                    "time_per_epoch_vs_finetune"):
            assert key in metrics, (method, key)
        assert metrics["tuned_vs_finetune"] < 0.2 and metrics["time_per_epoch_vs_finetune"] > 0
        assert mv.tags["stores"].startswith("tuned modules only")


def test_evaluation_has_the_pre_train_only_row_and_the_cold_groups(runs):
    out, _, _, _ = runs
    report = out["ppr_light"].steps["evaluate"].outputs["evaluation"][0].load()
    assert set(report.metrics) == {"ppr_light", "sasrec", "popularity", "history"}
    for group in ("cold_fewshot", "cold_zeroshot", "cold_joint", "cold_valid"):
        for model in ("ppr_light", "sasrec"):
            assert f"{group}_sampled99_hr_at_10" in report.metrics[model], (group, model)
    assert "Protocol `sampled99`" in report.to_markdown()


def test_a_registered_base_is_tuned_without_pre_training(runs):
    out, client, _, after_three = runs
    run = out["pomrec_from_registry"]
    assert "pretrain" not in run.steps and run.steps["load_base"].status == ExecutionStatus.COMPLETED
    assert len(client.search_model_versions(f"name='{BASE}'")) == after_three
    mv = _latest(client, f"{BASE}-pomrec")
    assert mv.tags["base_version"] == str(client.get_model_version_by_alias(BASE, "champion").version)


@pytest.mark.parametrize("method", ["ppr_light", "cpl"])
def test_registered_variant_serves_history_and_zero_shot_users(runs, method, zenml_env):
    out, _, _, _ = runs
    mlflow.set_tracking_uri(zenml_env["tracking_uri"])  # a pipeline run leaves the global URI elsewhere
    served = mlflow.pyfunc.load_model(f"models:/{BASE}-{method}@champion")
    frame = pd.DataFrame({
        "items": [["Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)"], [], []],
        "profile": [{"age": "25", "gender": "F", "occupation": "4"}, {"age": 18, "gender": "F", "occupation": 4},
                    {"age": "56", "gender": "M", "occupation": "13"}]})
    recs = served.predict(frame, params={"k": 10})
    assert all(len(r) == 10 for r in recs["items"]) and recs["unknown_items"][0] == []
    assert not set(recs["items"][0]) & set(frame["items"][0])
    # The served model ranks exactly as the tuned model from the pipeline's artifact does.
    import torch

    from components.models.tuned.profiles import encode_requests

    tuned = out[method].steps["prompt_tune"].outputs["tuned_model"][0].load().build()
    codes = encode_requests(list(frame["profile"]), tuned.config.profile_fields, tuned.config.profile_vocab)
    empty = torch.zeros(2, 3, dtype=torch.long)
    with torch.no_grad():
        top = torch.topk(tuned.score_all(empty, empty, profiles=torch.as_tensor(codes[1:])), 10).indices
    item_ids = out[method].steps["split"].outputs["sequences"][0].load().item_ids
    assert [list(recs["items"][1]), list(recs["items"][2])] == [[str(item_ids[i]) for i in row] for row in top.tolist()]
