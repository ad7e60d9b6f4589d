"""Register a trained recommender in MLflow's model registry and decide whether it becomes the champion.

The version holds an MLflow pyfunc ("model from code": ``components/serving/pyfunc_model.py`` plus our
``components`` package as code, weights/config/id map as artifacts; nothing pickled).  The alias ``champion``
moves to the new version only when ``components.registry.promotion.decide_promotion`` says so; otherwise the
version is kept without the alias.  Its tag ``champion_decision`` says why either way.

With a training data profile (components.data.drift), the version's run gets it as the artifact
``data/profile.json`` and the version the tag ``data_profile`` naming it: the drift gate of later runs compares
their data with the champion's (``components.registry.store.champion_profile``).

Tags a model brings in ``lineage.tags`` are set on its version too: the daily refresh
(``components.training.refresh``) records the champion version it re-tuned as ``base_version``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

from components.data.sequences import SequenceDataset
from components.metrics.report import EvaluationReport, describe_protocol
from components.models.trained import TrainedModel
from components.registry import store
from components.registry.names import CHAMPION, DECISION_TAG, PROFILE_ARTIFACT, PROFILE_TAG, WEIGHTS_TAG, model_name
from components.registry.promotion import Standing, decide_promotion
from components.serving.recommender import weights_digest, write_bundle

logger = logging.getLogger(__name__)
_COMPONENTS = Path(__file__).resolve().parents[1]
#: The pyfunc MLflow stores with every version (read by path: importing it would run its ``set_model``).
PYFUNC_MODEL = _COMPONENTS / "serving" / "pyfunc_model.py"


def signature(history_items: str) -> ModelSignature:
    """MLflow hands predict() only the params a signature declares (with their defaults).  ``exclude_seen``
    defaults to what the model was evaluated under: True only for ``history_items: excluded``.  Inputs stay free:
    item ids may be ints or strings."""
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("k", "long", 10), ParamSpec("exclude_seen", "boolean", history_items == "excluded")]))


def _requirements() -> list[str]:
    import numpy
    import pandas
    import safetensors
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
            f"pandas=={pandas.__version__}", f"safetensors=={safetensors.__version__}", f"mlflow=={mlflow.__version__}"]


def _with_base(trained: TrainedModel, base_model: TrainedModel | None, register_base: Callable[[], str],
               dataset: str) -> tuple[dict, dict | None, dict]:
    """For a tuned model: (the weights to store, the base reference the bundle loads, lineage tags).  The base is
    found among the registered versions by its digest, or registered first (``register_base``, returning its
    version); when the method kept it frozen only the tuned modules are stored."""
    state = trained.state_dict
    if not trained.is_tuned:
        return state, None, {}
    if base_model is None:
        raise ValueError(f"registering {trained.name} needs the pre-trained base it was tuned from")
    base_state = {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}
    base_digest = weights_digest(base_model.state_dict)
    base_name = model_name(dataset, base_model.method)
    known = base_model.lineage.source or {}  # a base loaded from the registry names its version
    base_version = str(known["version"]) if known.get("name") == base_name else \
        store.find_version_by_digest(base_name, base_digest)
    if base_version is None:
        base_version = register_base()
    tags = {"base_model": base_name, "base_version": base_version}
    if weights_digest(base_state) != base_digest:  # the method tuned the base: a self-contained bundle
        tags["stores"] = "all weights (the method tuned the base)"
        return state, None, tags
    tags["stores"] = "tuned modules only (frozen base fetched from the registry)"
    state = {k: v for k, v in state.items() if not k.startswith("base.")}
    return state, {"name": base_name, "version": base_version, "sha256": base_digest}, tags


def _version_tags(trained: TrainedModel, model_metrics: dict, dataset: str, selection_metric: str,
                  history_items: str, data_profile: dict | None) -> dict[str, str]:
    """What a registered version says about itself: dataset, model, selection figure and protocol, the @10
    metrics, refresh lineage and the training data's size (with its stored profile)."""
    protocol = selection_metric.split("_")[1]
    tags = {"dataset": dataset, "architecture": trained.architecture, "method": trained.method or "none",
            "selection_metric": selection_metric, "selection_value": f"{float(model_metrics[selection_metric]):.6f}",
            "protocol": f"{protocol}: {describe_protocol(protocol, history_items)}", "history_items": history_items}
    tags.update({k: f"{v:.6f}" for k, v in model_metrics.items() if k.endswith("_at_10") and "_n" not in k})
    # A refreshed model (components.training.refresh) names its base version here (tag ``base_version``).
    tags.update({str(k): str(v) for k, v in trained.lineage.tags.items()})
    if data_profile is not None:
        tags[PROFILE_TAG] = PROFILE_ARTIFACT
        tags.update({f"data_{k}": str(data_profile[k]) for k in ("events", "users", "items")})
    return tags


def register_recommender(trained: TrainedModel, data: SequenceDataset, report: EvaluationReport, dataset: str, *,
                         selection_metric: str = "valid_sampled99_ndcg_at_10", data_profile: dict | None = None,
                         base_model: TrainedModel | None = None, base_selection_metric: str | None = None) -> dict:
    """Register ``trained`` under ``model_name(dataset, trained.method)``.  A tuned model needs ``base_model``
    (the pre-trained model it was tuned from): the base is registered first under ``mbprompt-<dataset>`` (or an
    already registered version with the same weights is reused), and the tuned version records it (tags
    ``base_model``, ``base_version``).  When the method kept the base frozen, the tuned version stores only its
    own modules and loads the base's weights from the registry, so ten tuned variants share one copy of the
    base."""
    if mlflow.active_run() is None:
        raise RuntimeError("register needs an active MLflow run (attach the MLflow experiment tracker to the step)")
    name = model_name(dataset, trained.method)
    model_metrics = report.metrics[trained.name]
    if selection_metric not in model_metrics:
        raise KeyError(f"selection metric {selection_metric!r} not in the evaluation; have {sorted(model_metrics)}")
    new_value = float(model_metrics[selection_metric])
    history_items = data.meta.get("history_items", "excluded")

    def register_base() -> str:
        # the base is selected on warm users: cold_valid_<m> -> valid_<m>
        metric = base_selection_metric or selection_metric.replace("cold_valid_", "valid_", 1)
        with mlflow.start_run(run_name=f"register-base-{base_model.architecture}", nested=True):
            return register_recommender(base_model, data, report, dataset, selection_metric=metric,
                                        data_profile=data_profile)["version"]

    state, base_ref, lineage = _with_base(trained, base_model, register_base, dataset)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_bundle(
            Path(tmp), architecture=trained.architecture, method=trained.method, config=trained.config,
            state_dict=state, behavior_names=data.behavior_names,
            target_behaviors=[data.behavior_names[c - 1] for c in data.target_behaviors],
            item_ids=[str(x) for x in data.item_ids.tolist()], base=base_ref, history_items=history_items)
        info = mlflow.pyfunc.log_model(
            name="recommender", python_model=str(PYFUNC_MODEL), artifacts=artifacts,
            code_paths=[str(_COMPONENTS)], registered_model_name=name, pip_requirements=_requirements(),
            signature=signature(history_items))
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(name, version, WEIGHTS_TAG, weights_digest(trained.state_dict))
    for k, v in lineage.items():
        client.set_model_version_tag(name, version, k, str(v))
    if data_profile is not None:
        mlflow.log_dict(data_profile, PROFILE_ARTIFACT)
    for k, v in _version_tags(trained, model_metrics, dataset, selection_metric, history_items, data_profile).items():
        client.set_model_version_tag(name, version, k, v)

    current = store.aliased_version(name, CHAMPION)
    decision = decide_promotion(name, Standing(version, selection_metric, new_value, history_items),
                                None if current is None else Standing.from_tags(current.version, current.tags))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, DECISION_TAG, decision.reason)
    logger.info("registered %s version %s: %s", name, version, decision.reason)
    return {"name": name, "version": version, "champion": decision.promote, "reason": decision.reason,
            **({"base": lineage} if lineage else {}), "model_uri": f"models:/{name}/{version}",
            "selection_metric": selection_metric, "value": new_value}
