"""Register a trained recommender in MLflow's model registry and decide whether it becomes the champion.

The version holds an MLflow pyfunc ("model from code": ``components/serving/pyfunc_model.py`` plus our
``components`` package as code, weights/config/id map as artifacts; nothing pickled).  Every stored file's sha256
goes into the version's integrity manifest (``components.registry.integrity``; the loaders refuse a version whose
files no longer match).  The alias ``champion`` moves to the new version only when the champion gate
(``components.registry.champion.promote``: the champion scored on this version's validation data, under a lock)
and ``components.registry.promotion.decide_promotion`` say so; otherwise the version is kept without the alias.
Its tag ``champion_decision`` says why either way.

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
from mlflow.types.schema import AnyType, Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from components.data.sequences import SequenceDataset
from components.metrics.report import EvaluationReport, describe_protocol
from components.models.trained import TrainedModel
from components.registry import champion, integrity, names, store
from components.registry.names import DECISION_TAG, PROFILE_ARTIFACT, PROFILE_TAG, WEIGHTS_TAG
from components.serving.recommender import MAX_K, example_request, weights_digest, write_bundle

logger = logging.getLogger(__name__)
_COMPONENTS = Path(__file__).resolve().parents[1]
#: The pyfunc MLflow stores with every version (read by path: importing it would run its ``set_model``).
PYFUNC_MODEL = _COMPONENTS / "serving" / "pyfunc_model.py"


def signature(history_items: str, profile_fields: list[str] = ()) -> ModelSignature:
    """The served model's input columns, outputs and params (the MLflow UI shows them; MLflow hands predict() only
    the params a signature declares, with their defaults).

    Inputs: ``items`` (required: a list of item ids per row, oldest first), ``behaviors`` (optional: a list of
    behavior names, one per item), ``profile`` (optional: a dict field -> value) and, for a model that reads
    profiles, one optional column per profile field.  They are typed ``Any``: item ids may be ints or strings,
    profile values too, and the model checks the values itself (``components.serving.recommender``'s contract),
    so a bad request gets one line naming its row rather than MLflow's schema error, which echoes the whole
    request over several lines.  MLflow still checks that ``items`` is there.
    Params: ``k`` (10), ``max_k`` (the most items one answer holds) and ``exclude_seen``, which defaults to what
    the model was evaluated under: True only for ``history_items: excluded``."""
    inputs = [ColSpec(AnyType(), "items"), ColSpec(AnyType(), "behaviors", required=False),
              ColSpec(AnyType(), "profile", required=False)]
    inputs += [ColSpec(AnyType(), str(f), required=False) for f in profile_fields if f not in ("items", "behaviors",
                                                                                                  "profile")]
    outputs = [ColSpec(Array(DataType.string), "items"), ColSpec(Array(DataType.double), "scores"),
               ColSpec(Array(DataType.string), "unknown_items"), ColSpec(DataType.boolean, "all_unknown")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=ParamSchema([
        ParamSpec("k", "long", 10), ParamSpec("max_k", "long", MAX_K),
        ParamSpec("exclude_seen", "boolean", history_items == "excluded")]))


def _requirements() -> list[str]:
    import numpy
    import pandas
    import safetensors
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
            f"pandas=={pandas.__version__}", f"safetensors=={safetensors.__version__}", f"mlflow=={mlflow.__version__}"]


def _with_base(trained: TrainedModel, base_model: TrainedModel | None, register_base: Callable[[], str],
               dataset: str, root: str | None = None) -> tuple[dict, dict | None, dict]:
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
    base_name = names.model_name(dataset, base_model.method, root=root)
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
                         base_model: TrainedModel | None = None, base_selection_metric: str | None = None,
                         model_name: str | None = None, unscorable: str = "keep", tracking_uri: str | None = None,
                         promotion_lock: bool | None = None) -> dict:
    """Register ``trained`` under ``model_name`` (default ``mbprompt-<dataset>``; ``<model_name>-<method>`` for a
    tuned model).  A tuned model needs ``base_model``
    (the pre-trained model it was tuned from): the base is registered first under ``mbprompt-<dataset>`` (or an
    already registered version with the same weights is reused), and the tuned version records it (tags
    ``base_model``, ``base_version``).  When the method kept the base frozen, the tuned version stores only its
    own modules and loads the base's weights from the registry, so ten tuned variants share one copy of the
    base.

    The version's stored files are recorded in an integrity manifest (components.registry.integrity) before the
    champion gate runs: the gate (components.registry.champion.promote) scores the current champion on ``data``
    with ``selection_metric`` and moves the alias under the promotion lock; ``unscorable`` (``keep`` |
    ``promote``) says what happens when the champion cannot be scored on ``data``."""
    if mlflow.active_run() is None:
        raise RuntimeError("register needs an active MLflow run (attach the MLflow experiment tracker to the step)")
    name = names.model_name(dataset, trained.method, root=model_name)
    champion.parse_metric(selection_metric)  # a metric the gate can measure on the champion, before logging
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
                                        data_profile=data_profile, model_name=model_name, unscorable=unscorable,
                                        tracking_uri=tracking_uri, promotion_lock=promotion_lock)["version"]

    state, base_ref, lineage = _with_base(trained, base_model, register_base, dataset, model_name)
    target_behaviors = [data.behavior_names[c - 1] for c in data.target_behaviors]
    profile_fields = list(trained.config.get("profile_fields") or [])  # read by tuned models only
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_bundle(
            Path(tmp), architecture=trained.architecture, method=trained.method, config=trained.config,
            state_dict=state, behavior_names=data.behavior_names,
            target_behaviors=target_behaviors,
            item_ids=[str(x) for x in data.item_ids.tolist()], base=base_ref, history_items=history_items)
        info = mlflow.pyfunc.log_model(
            name="recommender", python_model=str(PYFUNC_MODEL), artifacts=artifacts,
            code_paths=[str(_COMPONENTS)], registered_model_name=name, pip_requirements=_requirements(),
            signature=signature(history_items, profile_fields),
            input_example=(example_request([str(x) for x in data.item_ids.tolist()], target_behaviors[-1],
                                           profile_fields, trained.config.get("profile_vocab") or []), {"k": 5}))
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:  # digest the files as stored, not the local copies
        integrity.record_manifest(name, version, store.download_version(name, version, tmp, tracking_uri),
                                  tracking_uri)
    client.set_model_version_tag(name, version, WEIGHTS_TAG, weights_digest(trained.state_dict))
    for k, v in lineage.items():
        client.set_model_version_tag(name, version, k, str(v))
    if data_profile is not None:
        mlflow.log_dict(data_profile, PROFILE_ARTIFACT)
    for k, v in _version_tags(trained, model_metrics, dataset, selection_metric, history_items, data_profile).items():
        client.set_model_version_tag(name, version, k, v)

    decision = champion.promote(name, version, data, selection_metric, new_value, tracking_uri=tracking_uri,
                                unscorable=unscorable, lock=promotion_lock)
    client.set_model_version_tag(name, version, DECISION_TAG, decision.reason)
    logger.info("registered %s version %s: %s", name, version, decision.reason)
    return {"name": name, "version": version, "champion": decision.promote, "reason": decision.reason,
            **({"base": lineage} if lineage else {}), "model_uri": f"models:/{name}/{version}",
            "selection_metric": selection_metric, "value": new_value}
