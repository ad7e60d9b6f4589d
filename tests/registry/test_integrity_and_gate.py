"""Integrity on load and the champion gate (issue 14 items 1 and 2), against a real MLflow SQLite store in a temp dir:
a registered version whose stored files were altered by one byte is refused by every loader with an error naming
the check; the champion is scored on the challenger's validation data before the alias moves; two registrations
racing leave the better one as champion; registered names come from the config."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from components.metrics.report import EvaluationReport
from components.models.registry import build_model
from components.models.trained import TrainedModel
from components.registry import champion as gate
from components.registry import names, store
from components.registry.integrity import IntegrityError
from components.registry.promotion import Promotion, Standing
from components.registry.register import register_recommender
from components.registry.versions import load_served, load_version
from tests.models.synthetic import make_chain_dataset
from tests.registry.stores import mlflow_store

pytestmark = pytest.mark.unit
METRIC = "valid_sampled20_ndcg_at_10"
REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 120


def chain(seed: int, n_items: int = N_ITEMS):
    return make_chain_dataset(n_warm=30, n_cold_tune=3, n_cold_test=3, n_items=n_items, n_negatives=20, seed=seed)


def trained(data, seed: int) -> TrainedModel:
    config = {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "max_len": 8, "hidden": 8, "n_layers": 1,
              "seed": seed}
    model = build_model("sasrec", config)
    return TrainedModel(architecture="sasrec", config=config,
                        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()})


def figure(model: TrainedModel, data) -> float:
    """The model's real selection figure on ``data``, as the evaluate step measures it."""
    return gate.measure(model.build(), data, METRIC)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow SQLite store for the module (creating one takes seconds); each test registers its own names."""
    with mlflow_store(tmp_path_factory.mktemp("gate"), "gate") as store:
        yield store


def register(experiment, model: TrainedModel, data, dataset: str, value: float | None = None, **kwargs) -> dict:
    """Register ``model`` as mbprompt-<dataset> with its real selection figure on ``data`` (or ``value``)."""
    value = figure(model, data) if value is None else value
    report = EvaluationReport(dataset=dataset, metrics={"sasrec": {METRIC: value}})
    with mlflow.start_run(experiment_id=experiment):
        return register_recommender(model, data, report, dataset, selection_metric=METRIC, **kwargs)


def stored_file(uri: str, name: str, version: str, relative: str) -> Path:
    """The file as it lies in the artifact store (a local folder here)."""
    location = MlflowClient(uri).get_model_version_download_uri(name, version)
    path = Path(location.removeprefix("file://")) / relative
    assert path.is_file(), f"{relative} not found under {location}"
    return path


# ---- 1. integrity on load ----------------------------------------------------------------------------------------
def test_a_version_altered_by_one_byte_is_refused_by_every_loader(tracking):
    uri, experiment = tracking
    data = chain(1)
    result = register(experiment, trained(data, 1), data, "tamper")
    name, version = result["name"], result["version"]
    mv = MlflowClient(uri).get_model_version(name, version)
    assert mv.tags[names.MANIFEST_TAG] and mv.tags[names.MANIFEST_PATH_TAG] == f"integrity/{name}-v{version}.json"
    assert load_version(name, version, tracking_uri=uri).version == version  # untouched: loads

    weights = stored_file(uri, name, version, "artifacts/weights.safetensors")
    original = weights.read_bytes()
    altered = bytearray(original)
    altered[-1] ^= 0x01  # one byte of the last tensor's data: still a valid safetensors file
    weights.write_bytes(bytes(altered))
    check = rf"{name} v{version} refused: integrity check \(sha256 of each stored file's bytes.*\) failed: " \
            r"artifacts/weights\.safetensors has sha256"
    with pytest.raises(IntegrityError, match=check):
        load_version(name, version, tracking_uri=uri)
    with pytest.raises(IntegrityError, match=check):
        load_served(name, version, tracking_uri=uri)
    with pytest.raises(IntegrityError, match=check):
        store.fetch_base_weights({"name": name, "version": version}, uri)
    with pytest.raises(IntegrityError, match=check):  # the served pyfunc's load_context
        mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    weights.write_bytes(original)

    code = stored_file(uri, name, version, "code/components/registry/names.py")
    code.write_text(code.read_text() + "\nCHAMPION = 'someone-else'\n")
    with pytest.raises(IntegrityError, match=rf"{name} v{version} refused: integrity check .* failed: "
                                             r"code/components/registry/names\.py has sha256"):
        load_served(name, version, tracking_uri=uri)


def test_an_added_file_or_an_edited_manifest_is_refused(tracking):
    uri, experiment = tracking
    data = chain(1)
    result = register(experiment, trained(data, 1), data, "planted")
    name, version = result["name"], result["version"]
    planted = stored_file(uri, name, version, "MLmodel").parent / "code" / "numpy.py"
    planted.write_text("raise SystemExit('shadowing numpy')\n")
    with pytest.raises(IntegrityError, match=r"code/numpy\.py was added \(not in the manifest\)"):
        load_version(name, version, tracking_uri=uri)
    planted.unlink()
    # Editing the manifest in the artifact store to match the tampered files cannot pass: its digest is a tag.
    run_artifacts = Path(MlflowClient(uri).get_run(result_run(uri, name, version)).info.artifact_uri.removeprefix(
        "file://"))
    manifest = run_artifacts / f"integrity/{name}-v{version}.json"
    manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 1 '))
    with pytest.raises(IntegrityError, match=rf"{name} v{version} refused: .*the manifest integrity/.* has sha256 "
                                             r".* but the version's tag manifest_sha256 records .*: the manifest was "
                                             "edited"):
        load_version(name, version, tracking_uri=uri)


def result_run(uri: str, name: str, version: str) -> str:
    return MlflowClient(uri).get_model_version(name, version).run_id


# ---- 2. the champion gate: same data, same metric ----------------------------------------------------------------
def test_decisions_are_pure_and_never_compare_unlike_figures():
    champ = Standing("1", METRIC, 0.3, recorded=0.5)
    better = gate.decide_promotion("m", Standing("2", METRIC, 0.31), champ)
    assert better == Promotion(True, f"{METRIC} 0.3100 beats champion v1 (0.3000 on v2's validation split; 0.5000 "
                                     "on its own split)")
    for value in (0.3, 0.29):  # equal or worse on the same data: kept, whatever the recorded figure says
        assert not gate.decide_promotion("m", Standing("2", METRIC, value), champ).promote
    other = gate.decide_promotion("m", Standing("2", "valid_full_ndcg_at_10", 0.99), champ)
    assert other == Promotion(False, f"not promoted: champion v1 was selected on {METRIC}, v2 on "
                                     "valid_full_ndcg_at_10; different metrics are never compared (align "
                                     "the configs' selection_metric, or move the alias by hand)")
    assert not gate.decide_promotion("m", Standing("2", METRIC, 0.99, "candidates"), champ).promote
    unscored = Standing("1", METRIC, None, unscored="item vocabularies differ")
    kept = gate.decide_promotion("m", Standing("2", METRIC, 0.9), unscored)
    assert not kept.promote and "cannot be scored on v2's validation data (item vocabularies differ)" in kept.reason
    assert gate.decide_promotion("m", Standing("2", METRIC, 0.9), unscored, unscorable="promote").promote
    with pytest.raises(ValueError, match="unscorable='maybe'"):
        gate.decide_promotion("m", Standing("2", METRIC, 0.9), champ, unscorable="maybe")
    assert gate.parse_metric("cold_valid_full_ndcg_at_10") == ("cold_valid", "full", "ndcg_at_10")
    with pytest.raises(ValueError, match="selection metric 'ndcg'"):
        gate.parse_metric("ndcg")


def test_the_champion_is_scored_on_the_challengers_data(tracking):
    """The champion registered on one split is measured again on the challenger's (other users, same items): the
    decision uses that figure, not the number stored with the champion."""
    uri, experiment = tracking
    old, fresh = chain(1), chain(2)
    assert list(old.item_ids) == list(fresh.item_ids)
    champion_model, challenger_model = trained(old, 3), trained(fresh, 4)
    first = register(experiment, champion_model, old, "fresh")
    second = register(experiment, challenger_model, fresh, "fresh")
    on_fresh, recorded = figure(champion_model, fresh), first["value"]
    assert on_fresh != pytest.approx(recorded)  # the two splits do give the champion different figures
    assert f"champion v1 ({on_fresh:.4f} on v2's validation split; {recorded:.4f} on its own split)" in second["reason"]
    assert second["champion"] is (second["value"] > on_fresh)
    assert MlflowClient(uri).get_model_version(first["name"], "2").tags[names.DECISION_TAG] == second["reason"]

    # other items: the champion cannot be scored there; kept by default, replaced when the config says so
    other = chain(5, n_items=N_ITEMS + 7)
    kept = register(experiment, trained(other, 6), other, "fresh", value=1.0)
    assert kept["champion"] is False and "item vocabularies differ" in kept["reason"]
    taken = register(experiment, trained(other, 7), other, "fresh", value=0.0, unscorable="promote")
    assert taken["champion"] is True and "unscorable: promote" in taken["reason"]


def test_racing_registrations_leave_the_better_version_champion(tracking):
    """v1 is champion; v2 (worse than v3) and v3 decide at the same time.  The test holds v3 between its decision
    and its set while v2 starts: with the lock, v2 waits and then sees v3; without it (a remote server), v2 decides
    on the stale v1 and sets the alias, and v3's re-check after setting puts itself back."""
    uri, experiment = tracking
    data = chain(1)
    models = {seed: trained(data, seed) for seed in range(1, 9)}
    ranked = sorted(models, key=lambda s: figure(models[s], data))
    low, mid, high = ranked[0], ranked[len(ranked) // 2], ranked[-1]
    values = {s: figure(models[s], data) for s in (low, mid, high)}
    assert values[low] < values[mid] < values[high]
    name = names.model_name("race")
    v1 = register(experiment, models[low], data, "race")["version"]
    v2 = register(experiment, models[mid], data, "race")["version"]   # beats v1: champion for now
    v3 = register(experiment, models[high], data, "race")["version"]
    client = MlflowClient(uri)

    def race(lock: bool) -> dict[str, Promotion]:
        client.set_registered_model_alias(name, names.CHAMPION, v1)
        results: dict[str, Promotion] = {}
        worse = threading.Thread(target=lambda: results.__setitem__(v2, gate.promote(
            name, v2, data, METRIC, values[mid], tracking_uri=uri, lock=lock, settle_s=0.5)))

        def hold(decision: Promotion) -> None:  # v3 decided; let v2 start and try to decide before v3 sets
            if not worse.is_alive() and worse.ident is None:
                worse.start()
                worse.join(timeout=3 if lock else 30)

        results[v3] = gate.promote(name, v3, data, METRIC, values[high], tracking_uri=uri, lock=lock,
                                   settle_s=0.5, on_decision=hold)
        worse.join()
        assert str(client.get_model_version_by_alias(name, names.CHAMPION).version) == v3
        return results

    locked = race(lock=True)
    assert locked[v3].promote and f"beats champion v{v1}" in locked[v3].reason
    assert not locked[v2].promote and f"does not beat champion v{v3}" in locked[v2].reason  # waited, then saw v3
    optimistic = race(lock=False)
    assert f"beats champion v{v1}" in optimistic[v2].reason  # v2 raced on the stale champion and set the alias
    assert optimistic[v3].promote and f"beats champion v{v2}" in optimistic[v3].reason  # v3 re-decided against it
    assert gate.lock_file(name, uri) == Path(uri.removeprefix("sqlite:///")).parent / f".{name}.promotion.lock"
    assert gate.lock_file(name, "http://mlflow:5000") is None


# ---- registered names come from the config -----------------------------------------------------------------------
def test_model_names_come_from_the_config():
    assert names.resolve_model_name("ml1m") == "mbprompt-ml1m"
    assert names.resolve_model_name("ml1m", "mbprompt-ml100k") == "mbprompt-ml100k"
    assert names.model_name("ml1m", "cpl", root="mbprompt-ml100k") == "mbprompt-ml100k-cpl"
    with pytest.raises(ValueError, match="parameters.model_name is required for dataset 'generic'"):
        names.resolve_model_name("generic")
    with pytest.raises(ValueError, match="parameters.model_name 'a b'"):
        names.resolve_model_name("ml1m", "a b")


def test_configs_sharing_a_registered_name_select_on_the_same_metric():
    """Two configs that register under one name compete for one champion: they must select on the same metric
    (and the generic config names its model)."""
    by_name: dict[str, set[str]] = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        params = cfg.get("parameters") or {}
        metric = (((cfg.get("steps") or {}).get("register") or {}).get("parameters") or {}).get("selection_metric")
        if "dataset" not in params or metric is None:
            continue
        method = params.get("tuning", "none")
        name = names.model_name(params["dataset"], None if method == "none" else method,
                                root=names.resolve_model_name(params["dataset"], params.get("model_name")))
        by_name.setdefault(name, set()).add(f"{metric} ({path.name})")
    clashes = {n: sorted(m) for n, m in by_name.items() if len({x.split(' ')[0] for x in m}) > 1}
    assert not clashes, f"configs registering under one name select on different metrics: {clashes}"


@pytest.mark.pipeline
def test_the_generic_pipeline_without_a_model_name_stops_before_anything_runs(zenml_env):
    from pipelines.training import training_pipeline

    mapping = yaml.safe_load((REPO / "configs" / "generic.yaml").read_text())["parameters"]["mapping"]
    with pytest.raises(ValueError, match="parameters.model_name is required for dataset 'generic'"):
        training_pipeline.prepare(dataset="generic", raw_path="data/none.csv", mapping=mapping)
    training_pipeline.prepare(dataset="generic", raw_path="data/none.csv", mapping=mapping,
                              model_name="mbprompt-beauty")
    assert training_pipeline.invocations["register"].parameters["model_name"] == "mbprompt-beauty"
