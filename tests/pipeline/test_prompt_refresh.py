"""The daily refresh on the real Taobao head: a champion from the training pipeline (cached when
tests/pipeline/test_training_pipeline.py ran first), then prompt_refresh_pipeline on the head with every 40th
row moved to an item the champion never saw.  By default the refresh re-tunes the champion's head (last block +
final LayerNorm) only; with ``tuning: cpl`` it prompt-tunes the champion's frozen base on the fresh cold users."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from zenml.enums import ExecutionStatus

from components.registry.versions import NoChampionError, load_version
from components.training.refresh import BASE_VERSION_TAG
from tests.pipeline.test_training_pipeline import MODEL, n_versions, run_pipeline, write_config

pytestmark = pytest.mark.slow  # training and refresh pipeline runs

HEAD_PREFIXES = ("blocks.1.", "ln_f.")  # the test champion is a 2-block SASRec


def refresh_config(path: Path, raw_path: Path) -> Path:
    cfg = yaml.safe_load(write_config(path, raw_path).read_text())
    cfg["run_name"] = f"test-refresh-{path.stem}-{{date}}-{{time}}"
    training = cfg["steps"].pop("pretrain")["parameters"]["training"]
    cfg["steps"]["retune_head"] = {"parameters": {"training": {**training, "epochs": 2}}}
    cfg["steps"]["validate"]["parameters"]["drift"] = {"mode": "fail"}
    cfg["steps"]["validate"]["enable_cache"] = False
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_refresh(config: Path):
    from pipelines.prompt_refresh import prompt_refresh_pipeline

    return prompt_refresh_pipeline.with_options(config_path=str(config))()


@pytest.fixture(scope="module")
def fresh_data(taobao_head, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fresh") / "UserBehavior.csv"
    lines = taobao_head.read_text().splitlines()
    for i in range(0, len(lines) - 1, 40):  # keep the truncated last row as it is
        parts = lines[i].split(",")
        parts[1] = f"9{parts[1]}0"
        lines[i] = ",".join(parts)
    out.write_text("\n".join(lines))
    return out


@pytest.fixture(scope="module")
def refreshed(zenml_env, taobao_head, fresh_data, tmp_path_factory):
    uri = zenml_env["tracking_uri"]
    client = MlflowClient(uri)
    previous = client.get_registered_model(MODEL).aliases.get("champion") if n_versions(uri) else None
    run = run_pipeline(write_config(tmp_path_factory.mktemp("cfg") / "ok.yaml", taobao_head))
    assert run.status == ExecutionStatus.COMPLETED
    # The champion is this run's version, even when its register step came from the cache and another module
    # (the drift gate's warn run) has moved the alias since.
    version = run.steps["register"].outputs["registration"][0].load()["version"]
    MlflowClient(uri).set_registered_model_alias(MODEL, "champion", str(version))
    champion = MlflowClient(uri).get_model_version_by_alias(MODEL, "champion")
    before = n_versions(uri)
    run = run_refresh(refresh_config(tmp_path_factory.mktemp("cfg") / "refresh.yaml", fresh_data))
    assert run.status == ExecutionStatus.COMPLETED
    assert n_versions(uri) == before + 1
    yield run, champion
    # Leave the registry as the other modules expect it: the alias where it was before this module.
    client.set_registered_model_alias(MODEL, "champion", str(previous or champion.version))


def test_refresh_without_a_champion_says_run_training_first(zenml_env):
    with pytest.raises(NoChampionError, match="run the training pipeline first"):
        load_version("mbprompt-nothing-here", tracking_uri=zenml_env["tracking_uri"])


def test_refresh_registers_a_version_of_the_champion_base(refreshed, zenml_env):
    run, champion = refreshed
    uri = zenml_env["tracking_uri"]
    new_version = run.steps["register"].outputs["registration"][0].load()["version"]
    new = MlflowClient(uri).get_model_version(MODEL, new_version)
    assert new.tags[BASE_VERSION_TAG] == str(champion.version)
    assert new.tags["head"] == "blocks.1,ln_f"

    align = run.steps["align_vocab"].run_metadata["align"]
    assert align["items_unknown"] > 0 and align["rows_dropped_unknown_item"] > 2000, align
    assert align["model_items"] == run.steps["split"].outputs["sequences"][0].load().n_items

    base = load_version(MODEL, str(champion.version), tracking_uri=uri)
    tuned = load_version(MODEL, new_version, tracking_uri=uri)
    assert tuned.item_ids == base.item_ids and tuned.config == base.config
    changed = {k for k in base.state_dict if not torch.equal(base.state_dict[k], tuned.state_dict[k])}
    assert changed and all(k.startswith(HEAD_PREFIXES) for k in changed), sorted(changed)
    assert "item_emb.weight" not in changed and "blocks.0.attn.qkv.weight" not in changed


def test_refreshed_model_recommends(refreshed, zenml_env, taobao_head):
    run, _ = refreshed
    new_version = run.steps["register"].outputs["registration"][0].load()["version"]
    mlflow.set_tracking_uri(zenml_env["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{new_version}")
    rows = [r.split(",") for r in taobao_head.read_text().splitlines()[:200]]
    history = [r[1] for r in rows if r[0] == rows[0][0]][:20]
    out = model.predict(pd.DataFrame({"items": [history, ["never-seen"]]}), params={"k": 5, "exclude_seen": True})
    assert all(len(recs) == 5 and len(set(recs)) == 5 for recs in out["items"])
    assert not set(out["items"][0]) & set(history)


def test_refresh_can_prompt_tune_the_champion_base(refreshed, zenml_env, fresh_data, tmp_path):
    """tuning: cpl (the Taobao head has no profiles: CPL reads the behavior sequence) on the champion's base."""
    uri = zenml_env["tracking_uri"]
    champion = MlflowClient(uri).get_model_version_by_alias(MODEL, "champion")  # the refresh above may have moved it
    cfg = yaml.safe_load(refresh_config(tmp_path / "cpl.yaml", fresh_data).read_text())
    cfg["run_name"] = "test-refresh-cpl-{date}-{time}"
    cfg["parameters"]["tuning"] = "cpl"
    training = cfg["steps"].pop("retune_head")["parameters"]["training"]
    cfg["steps"]["prompt_tune"] = {"parameters": {"training": {**training, "valid_metric": "sampled99_ndcg_at_10"}}}
    cfg["steps"]["register"] = {"parameters": {"selection_metric": "cold_valid_sampled99_ndcg_at_10"}}
    (tmp_path / "cpl.yaml").write_text(yaml.safe_dump(cfg))
    before = n_versions(uri)
    run = run_refresh(tmp_path / "cpl.yaml")
    assert run.status == ExecutionStatus.COMPLETED and "retune_head" not in run.steps
    assert n_versions(uri) == before  # the champion was re-used as the base, not registered again
    result = run.steps["register"].outputs["registration"][0].load()
    mv = MlflowClient(uri).get_model_version(result["name"], result["version"])
    assert result["name"] == f"{MODEL}-cpl" and mv.tags["base_version"] == str(champion.version)
    assert mv.tags["stores"].startswith("tuned modules only")
