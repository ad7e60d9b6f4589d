"""The registry gateway (components.registry): registered names and the champion decision as pure functions, then
the look-ups, loading and registering against a real MLflow SQLite store in a temp dir (no ZenML, no mocks)."""

from __future__ import annotations

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from components.metrics.report import EvaluationReport
from components.models.registry import build_model
from components.models.trained import TrainedModel
from components.registry import champion as champion_gate
from components.registry import names, store
from components.registry.promotion import Promotion, Standing, decide_promotion
from components.registry.register import register_recommender
from components.registry.summary import summary
from components.registry.versions import NoChampionError, load_version
from components.serving.recommender import weights_digest
from tests.models.synthetic import make_chain_dataset
from tests.registry.stores import mlflow_store

pytestmark = pytest.mark.unit
METRIC = "valid_sampled99_ndcg_at_10"


# ---- pure --------------------------------------------------------------------------------------------------------
def test_model_name_is_per_dataset_and_tuning_method():
    assert names.model_name("ml1m") == "mbprompt-ml1m"
    assert names.model_name("ml1m", None) == "mbprompt-ml1m"
    assert names.model_name("taobao", "cpl") == "mbprompt-taobao-cpl"
    with pytest.raises(ValueError, match="dataset name is empty"):
        names.model_name("")


def test_first_version_is_promoted():
    decision = decide_promotion("mbprompt-x", Standing("1", METRIC, 0.31234), None)
    assert decision == Promotion(True, f"first version of mbprompt-x: {METRIC}=0.3123")


def test_a_strictly_better_value_takes_the_alias_an_equal_one_does_not():
    champion = Standing("2", METRIC, 0.3)  # the champion's figure on the challenger's validation split
    better = decide_promotion("m", Standing("3", METRIC, 0.30001), champion)
    assert better == Promotion(True, f"{METRIC} 0.3000 beats champion v2 (0.3000 on v3's validation split)")
    for value in (0.3, 0.2):
        kept = decide_promotion("m", Standing("3", METRIC, value), champion)
        assert kept == Promotion(False, f"{METRIC} {value:.4f} does not beat champion v2 (0.3000 on v3's "
                                        "validation split); kept without the alias")


@pytest.mark.parametrize("champion, why", [
    (Standing("2", "valid_full_ndcg_at_10", 0.01), "different metrics are never compared"),
    (Standing("2", METRIC, None), "cannot be scored on v5's validation data (no figure)"),
    (Standing("2", METRIC, 0.01, history_items="candidates"), "different protocols are never compared"),
])
def test_a_champion_without_a_comparable_figure_is_never_replaced_automatically(champion, why):
    decision = decide_promotion("m", Standing("5", METRIC, 0.9), champion)
    assert decision.promote is False and decision.reason.startswith("not promoted: champion v2") and \
        why in decision.reason


def test_a_champions_standing_comes_from_its_tags():
    assert Standing.from_tags(4, {"selection_metric": METRIC, "selection_value": "0.250000"}) == \
        Standing("4", METRIC, 0.25, "excluded", recorded=0.25)  # registered before history_items: excluded
    assert Standing.from_tags("4", {"history_items": "candidates"}) == Standing("4", None, None, "candidates")
    with pytest.raises(ValueError, match="needs its selection metric and value"):
        decide_promotion("m", Standing("1", METRIC, None), None)


# ---- on a real MLflow store ---------------------------------------------------------------------------------------
@pytest.fixture
def tracking(tmp_path):
    """A fresh MLflow SQLite store with its artifacts in the temp dir, as MLflow's current tracking URI."""
    with mlflow_store(tmp_path, "gateway") as store:
        yield store


def test_an_empty_registry_has_no_champion(tracking):
    uri, _ = tracking
    assert store.aliased_version("mbprompt-none", tracking_uri=uri) is None
    assert store.champion_profile("mbprompt-none", uri) is None
    assert store.find_version_by_digest("mbprompt-none", "abc", uri) is None
    assert store.finetune_reference("cpl", "digest", "sasrec") is None  # no active run
    assert store.finetune_reference("finetune", "digest", "sasrec") is None
    with pytest.raises(NoChampionError, match="mbprompt-none has no 'champion' version .* run the training "
                                              "pipeline first"):
        load_version("mbprompt-none", tracking_uri=uri)
    assert "no registered version of mbprompt-none yet" in summary(uri, "none")


@pytest.mark.slow  # three registrations (each stores the components package as the pyfunc's code)
def test_register_load_and_look_up_versions(tracking):
    uri, experiment = tracking
    data = make_chain_dataset(n_warm=20, n_cold_tune=3, n_cold_test=3, n_items=120, n_negatives=20, seed=1)
    config = {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "max_len": 8, "hidden": 8, "n_layers": 1}

    def trained(seed: int) -> TrainedModel:
        model = build_model("sasrec", {**config, "seed": seed})
        return TrainedModel(architecture="sasrec", config={**config, "seed": seed},
                            state_dict={k: v.detach().clone() for k, v in model.state_dict().items()})

    # real figures: the gate measures the champion on the challenger's data, as the evaluate step measured these
    metric = "valid_sampled20_ndcg_at_10"
    models = {seed: trained(seed) for seed in range(1, 7)}
    value = {seed: champion_gate.measure(m.build(), data, metric) for seed, m in models.items()}
    ranked = sorted(models, key=value.get)
    low, mid, high = ranked[0], ranked[len(ranked) // 2], ranked[-1]
    assert value[low] < value[mid] < value[high]

    def register(seed: int, profile: dict | None = None) -> dict:
        report = EvaluationReport(dataset="chain", metrics={"sasrec": {metric: value[seed],
                                                                       "test_sampled20_hr_at_10": 0.5}})
        with mlflow.start_run(experiment_id=experiment):
            return register_recommender(models[seed], data, report, "chain", selection_metric=metric,
                                        data_profile=profile)

    name = names.model_name("chain")
    profile = {"events": 100, "users": 20, "items": 120, "behavior_share": {"b1": 1.0}}
    first_model, second_model, third_model = models[mid], models[low], models[high]
    first = register(mid, profile)
    second = register(low)
    third = register(high)
    assert (first["name"], first["version"], first["champion"]) == (name, "1", True)
    assert first["reason"] == f"first version of {name}: {metric}={value[mid]:.4f}"
    assert second["champion"] is False and "does not beat champion v1" in second["reason"]
    assert third["champion"] is True and third["reason"] == \
        f"{metric} {value[high]:.4f} beats champion v1 ({value[mid]:.4f} on v3's validation split; " \
        f"{value[mid]:.4f} on its own split)"
    assert third["model_uri"] == f"models:/{name}/3"
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(name, names.CHAMPION).version) == "3"
    tags = client.get_model_version(name, "2").tags
    assert tags[names.DECISION_TAG] == second["reason"] and tags["selection_value"] == f"{value[low]:.6f}"
    assert tags[names.WEIGHTS_TAG] == weights_digest(second_model.state_dict)

    # look-ups
    assert store.find_version_by_digest(name, weights_digest(second_model.state_dict), uri) == "2"
    assert store.champion_profile(name, uri) is None  # the champion (v3) was registered without a profile
    client.set_registered_model_alias(name, "first", "1")
    run_id = client.get_model_version(name, "1").run_id
    assert store.champion_profile(name, uri, alias="first") == {
        **profile, "registered_as": {"name": name, "version": "1", "run_id": run_id, "alias": "first"}}
    weights = store.fetch_base_weights({"name": name, "version": "1"}, uri)
    assert weights.name == "weights.safetensors"
    assert weights_digest(load_file(str(weights))) == weights_digest(first_model.state_dict)

    # loading: the champion by default, a named version on request
    champion = load_version(name, tracking_uri=uri)
    assert (champion.name, champion.version, champion.architecture, champion.method) == (name, "3", "sasrec", None)
    assert champion.item_ids == [str(x) for x in data.item_ids.tolist()]
    assert champion.behavior_names == data.behavior_names and champion.config == third_model.config
    assert champion.describe()["n_items"] == data.n_items
    assert weights_digest(champion.state_dict) == weights_digest(third_model.state_dict)
    built = champion.model.build()
    assert all(torch.equal(v, third_model.state_dict[k]) for k, v in built.state_dict().items())
    assert load_version(name, 2, tracking_uri=uri).tags[names.DECISION_TAG] == second["reason"]
    assert f"{name} version 3" in summary(uri, "chain")
    assert f"{name} version 3" in summary(uri, "ignored", model_name=name)  # a config's model_name wins

