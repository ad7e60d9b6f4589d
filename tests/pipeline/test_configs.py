"""Every YAML in configs/ fits the pipeline it configures.

ZenML only *warns* about a `steps:` entry that names no step of the pipeline and then ignores it, so a typo in a
config would silently train with defaults.  These tests fail instead: step names, step parameters, the nested
settings each component parses, and the metric names that must agree between steps are all checked here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from components.data.readers.registry import FORMATS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
DATASETS = set(FORMATS)  # the one list of datasets (components/data/readers/registry.py)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _step_params(cfg: dict, step: str) -> dict:
    return ((cfg.get("steps") or {}).get(step) or {}).get("parameters") or {}


def _pipeline_for(path: Path):
    """configs/prompt_refresh*.yaml configure the daily refresh pipeline, configs/batch_inference*.yaml the batch
    recommendations; every other config the training one."""
    if path.name.startswith("batch_inference"):
        from pipelines.batch_inference import batch_inference_pipeline

        return batch_inference_pipeline
    if path.name.startswith("prompt_refresh"):
        from pipelines.prompt_refresh import prompt_refresh_pipeline

        return prompt_refresh_pipeline
    from pipelines.training import training_pipeline

    return training_pipeline


def _train_step(cfg: dict) -> str:
    return "retune_head" if "retune_head" in (cfg.get("steps") or {}) else "pretrain"


@pytest.fixture(scope="module")
def pipeline_steps(zenml_env) -> dict:
    """Pipeline name -> {invocation name -> step object}, as ZenML composes the real pipelines."""
    from pipelines.batch_inference import batch_inference_pipeline
    from pipelines.prompt_refresh import prompt_refresh_pipeline
    from pipelines.training import training_pipeline

    out = {}
    for pipe in (training_pipeline, prompt_refresh_pipeline, batch_inference_pipeline):
        pipe.prepare(dataset="ml1m", raw_path="data/ml-1m")
        out[pipe.name] = {name: inv.step for name, inv in pipe.invocations.items()}
    # The training pipeline's steps depend on its parameters: tuning adds prompt_tune, a registered base load_base.
    training_pipeline.prepare(dataset="ml1m", raw_path="data/ml-1m", tuning="cpl", base_model={"name": "m"})
    out[training_pipeline.name].update({name: inv.step for name, inv in training_pipeline.invocations.items()})
    return out


def test_every_dataset_has_a_config():
    """configs/<dataset>.yaml for every registered dataset, and it configures that dataset."""
    names = {p.stem for p in CONFIGS}
    assert {"quickstart"} | DATASETS <= names, f"registered datasets without a config: {sorted(DATASETS - names)}"
    for dataset in DATASETS:
        assert _load(REPO / "configs" / f"{dataset}.yaml")["parameters"]["dataset"] == dataset
    assert any(n.endswith(".k8s") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_as_a_zenml_run_configuration(path: Path):
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    PipelineRunConfiguration.model_validate(_load(path))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_step_names_and_parameters_exist(path: Path, pipeline_steps: dict):
    pipe = _pipeline_for(path)
    steps_of = pipeline_steps[pipe.name]
    cfg = _load(path)
    params = cfg.get("parameters") or {}
    assert params.get("dataset") in DATASETS, f"{path.name}: parameters.dataset must be one of {sorted(DATASETS)}"
    assert params.get("raw_path"), f"{path.name}: parameters.raw_path is required"
    if not path.name.endswith(".k8s.yaml"):
        # Configs in the repo point under data/; nothing outside the repo may be assumed.
        assert params["raw_path"].startswith("data/"), f"{path.name}: raw_path {params['raw_path']!r}"
    accepted = set(inspect.signature(pipe.entrypoint).parameters)
    assert set(params) <= accepted, f"{path.name}: unknown pipeline parameters {set(params) - accepted}"

    for step_name, step_cfg in (cfg.get("steps") or {}).items():
        assert step_name in steps_of, (
            f"{path.name}: step {step_name!r} is not in {pipe.name}; steps are {sorted(steps_of)}")
        signature = set(inspect.signature(steps_of[step_name].entrypoint).parameters)
        unknown = set((step_cfg or {}).get("parameters") or {}) - signature
        assert not unknown, f"{path.name}: steps.{step_name}.parameters has unknown keys {sorted(unknown)}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_against_the_parameter_schemas(path: Path, pipeline_steps: dict):
    """Every value of the config passes the typed schema of the parameter it sets (the step's or the pipeline's
    annotation, components/*/config_schema.py) exactly as ZenML checks it when it compiles a run, and the step
    hands its component the very values the YAML holds; nothing runs."""
    from pydantic import TypeAdapter

    from components.settings import Settings, settings_dict

    pipe = _pipeline_for(path)
    cfg = _load(path)
    checked = 0
    signature = inspect.signature(pipe.entrypoint).parameters
    for name, value in (cfg.get("parameters") or {}).items():
        TypeAdapter(signature[name].annotation).validate_python(value)
        checked += 1
    for step_name, step_cfg in (cfg.get("steps") or {}).items():
        signature = inspect.signature(pipeline_steps[pipe.name][step_name].entrypoint).parameters
        for name, value in ((step_cfg or {}).get("parameters") or {}).items():
            annotation = signature[name].annotation
            parsed = TypeAdapter(annotation).validate_python(value)
            if isinstance(parsed, Settings):
                assert settings_dict(parsed, annotation) == value, f"{path.name}: steps.{step_name}.{name}"
            checked += 1
    assert checked >= 3, path.name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_nested_settings_are_accepted_by_their_components(path: Path):
    """The dicts each step hands to a component are parsed exactly as the step parses them (unknown keys raise)."""
    from components.data.clean import CleanConfig
    from components.data.datasets import validation_config
    from components.data.drift import DriftConfig
    from components.data.split import SplitConfig
    from components.settings import from_dict
    from components.training.trainer import TrainConfig

    cfg = _load(path)
    params = cfg["parameters"]
    validation_config(params["dataset"], _step_params(cfg, "validate").get("rules"), params.get("mapping"))
    DriftConfig.from_dict(_step_params(cfg, "validate").get("drift"))
    from_dict(CleanConfig, _step_params(cfg, "clean").get("rules"), where="clean")
    split_cfg = from_dict(SplitConfig, _step_params(cfg, "split").get("settings"), where="split")

    # Parsed as pretrain parses it (model_config: the encoder's config, wrapped by the repeat head if asked).
    from types import SimpleNamespace

    from components.training.pretrain import model_config

    model_config(SimpleNamespace(n_items=10, n_behaviors=1), _step_params(cfg, "pretrain").get("model"))
    train_cfg = from_dict(TrainConfig, _step_params(cfg, _train_step(cfg)).get("training"), where="training")

    # The metric names that tie steps together must name the protocol the split actually stores.
    protocol = f"sampled{split_cfg.n_negatives}"
    assert re.fullmatch(r"(sampled\d+|full)_(ndcg|hr|mrr)_at_\d+|(sampled\d+|full)_auc", train_cfg.valid_metric)
    if train_cfg.valid_metric.startswith("sampled"):
        assert train_cfg.valid_metric.startswith(protocol + "_"), (
            f"{path.name}: training.valid_metric {train_cfg.valid_metric!r} but the split draws "
            f"{split_cfg.n_negatives} negatives")
    tuning = params.get("tuning", "none")
    if tuning != "none":
        from components.models.tuned.methods import METHODS, method_config

        assert tuning in METHODS, f"{path.name}: tuning {tuning!r} not in {METHODS}"
        tune = _step_params(cfg, "prompt_tune")
        settings = dict(tune.get("settings") or {})
        fields = settings.pop("profile_fields", None) or ["age"]
        method_config(tuning, {"base_architecture": "sasrec", "base_config": {"hidden": 8}, "n_items": 10,
                               "profile_fields": fields, "profile_vocab": [["x"]] * len(fields), **settings},
                      where="prompt_tune.settings")
        tune_train = from_dict(TrainConfig, tune.get("training"), where="prompt_tune.training")
        if tune_train.valid_metric.startswith("sampled"):
            assert tune_train.valid_metric.startswith(protocol + "_"), path.name
    # Tuned models are selected on the cold tuning users' held-out targets; pre-trained ones on warm validation.
    valid_set = "cold_valid" if tuning != "none" else "valid"
    selection = _step_params(cfg, "register").get("selection_metric", "valid_sampled99_ndcg_at_10")
    assert selection.startswith(f"{valid_set}_"), f"{path.name}: champion selection must use {valid_set}, not test"
    if "_sampled" in selection:
        assert selection.startswith(f"{valid_set}_{protocol}_"), (
            f"{path.name}: register.selection_metric {selection!r} but the split draws {split_cfg.n_negatives}")


def test_kubernetes_config_puts_pretraining_on_a_gpu_node():
    for path in (p for p in CONFIGS if p.name.endswith(".k8s.yaml")):
        cfg = _load(path)
        pretrain = cfg["steps"][_train_step(cfg)]  # retune_head in the daily refresh
        pod = pretrain["settings"]["orchestrator.kubernetes"]["pod_settings"]
        assert pod["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["node_selectors"] and pod["tolerations"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
