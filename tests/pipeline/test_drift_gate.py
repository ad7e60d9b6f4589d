"""The drift gate in the real pipeline: a champion trained on the Taobao head, then the head with every second
click row dropped (click share 0.898 -> 0.815).  mode fail stops the run in VALIDATE (nothing registered, the
champion alias stays); mode warn logs the report and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from zenml.enums import ExecutionStatus

from components.registry.store import champion_profile
from tests.pipeline.test_training_pipeline import MODEL, n_versions, run_pipeline, write_config

pytestmark = pytest.mark.slow  # pipeline runs per drift mode


def with_drift(config: Path, mode: str) -> Path:
    cfg = yaml.safe_load(config.read_text())
    cfg["steps"]["validate"]["parameters"]["drift"] = {"mode": mode}
    config.write_text(yaml.safe_dump(cfg))
    return config


@pytest.fixture(scope="module")
def champion(zenml_env, taobao_head, tmp_path_factory):
    """A champion with a data profile (the same config as tests/pipeline/test_training_pipeline.py, so its steps
    come from the cache when that module ran first)."""
    cfg = write_config(tmp_path_factory.mktemp("cfg") / "ok.yaml", taobao_head)
    run = run_pipeline(with_drift(cfg, "fail"))  # the gate is on: first run (or same data) passes
    assert run.status == ExecutionStatus.COMPLETED
    client = MlflowClient(zenml_env["tracking_uri"])
    # The champion is this run's version (its register step may come from the cache while another module moved
    # the alias since); the warn run below may promote its own version: put the alias back afterwards.
    version = run.steps["register"].outputs["registration"][0].load()["version"]
    client.set_registered_model_alias(MODEL, "champion", str(version))
    yield client.get_model_version_by_alias(MODEL, "champion")
    client.set_registered_model_alias(MODEL, "champion", str(version))


@pytest.fixture(scope="module")
def halved_clicks(taobao_head, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("halved") / "UserBehavior.csv"
    lines, clicks = [], 0
    for line in taobao_head.read_text().splitlines():
        if line.split(",")[3:4] == ["pv"]:
            clicks += 1
            if clicks % 2 == 0:
                continue
        lines.append(line)
    out.write_text("\n".join(lines))
    return out


def test_champion_carries_its_data_profile(champion, zenml_env):
    profile = champion_profile(MODEL, zenml_env["tracking_uri"])
    assert profile is not None and profile["registered_as"]["version"] == str(champion.version)
    assert profile["events"] == 84_475 and profile["behavior_counts"]["click"] == 75_872
    assert champion_profile("mbprompt-nothing-here", zenml_env["tracking_uri"]) is None


def test_shifted_mix_fails_and_registers_nothing(champion, zenml_env, halved_clicks, tmp_path):
    uri = zenml_env["tracking_uri"]
    before = n_versions(uri)
    with pytest.raises(Exception) as err:
        run_pipeline(with_drift(write_config(tmp_path / "fail.yaml", halved_clicks), "fail"))
    text = str(err.value)
    assert "behavior_share[click]: reference 0.8982, current 0.8151, change -0.0830 (allowed: |change| <= 0.05)" in text
    assert f"{MODEL} v{champion.version} (champion)" in text
    assert n_versions(uri) == before
    assert MlflowClient(uri).get_model_version_by_alias(MODEL, "champion").version == champion.version
    from zenml.client import Client

    report = Client().get_artifact_version("drift_report_failed").load()
    assert report["passed"] is False


def test_shifted_mix_warns_and_the_run_goes_on(champion, zenml_env, halved_clicks, tmp_path):
    uri = zenml_env["tracking_uri"]
    before = n_versions(uri)
    run = run_pipeline(with_drift(write_config(tmp_path / "warn.yaml", halved_clicks), "warn"))
    assert run.status == ExecutionStatus.COMPLETED
    assert run.steps["validate"].run_metadata["drift"]["passed"] is False
    assert n_versions(uri) == before + 1
    client = MlflowClient(uri)
    new = client.search_model_versions(f"name='{MODEL}'", order_by=["version_number DESC"], max_results=1)[0]
    drift = json.loads(Path(client.download_artifacts(new.run_id, "data/drift.json", str(tmp_path))).read_text())
    assert [c["name"] for c in drift["checks"] if not c["passed"]] == ["behavior_share[click]"]
