"""The typed parameter schemas (components/settings.py ``schema_of`` / ``located``; the schemas themselves in
components/data, training and tuning ``config_schema.py``): each bad value of issue 14 is refused with its full key
path, valid values reach the components exactly as given, and the schemas follow the config dataclasses they are
derived from.  No ZenML here: tests/pipeline/test_config_errors.py runs the real pipeline with a bad config.
"""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import create_model

from components.data import config_schema as data_schema
from components.data.split import SplitConfig
from components.models.registry import ARCHITECTURES, RENAMED
from components.settings import ConfigError, located, schema_of, settings_dict
from components.training import config_schema as train_schema
from components.training.trainer import TrainConfig
from components.tuning import config_schema as tune_schema

PRETRAIN = "steps.pretrain.parameters"


def refused(tp, value) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        settings_dict(value, tp)
    return err.value


@pytest.mark.parametrize("tp, value, path, says", [
    # issue 14's cases
    (train_schema.Model, {"name": "sasrek"}, f"{PRETRAIN}.model.name", "unknown model name"),
    (train_schema.Training, {"epoch": 3}, f"{PRETRAIN}.training.epoch", "unknown setting"),
    (train_schema.Training, {"epochs": "ten"}, f"{PRETRAIN}.training.epochs", "valid integer"),
    (train_schema.Training, {"lr": -0.001}, f"{PRETRAIN}.training.lr", "greater than 0"),
    (train_schema.Training, {"lr": "fast"}, f"{PRETRAIN}.training.lr", "valid number"),
    (train_schema.Training, {"epochs": 2.5}, f"{PRETRAIN}.training.epochs", "valid integer"),
    # ranges and choices
    (train_schema.Training, {"epochs": 0}, f"{PRETRAIN}.training.epochs", "greater than or equal to 1"),
    (train_schema.Training, {"loss": "softmax"}, f"{PRETRAIN}.training.loss", "'ce'"),
    (train_schema.Model, {"name": "sasrec", "dropout": 1.0}, f"{PRETRAIN}.model.dropout", "less than 1"),
    (train_schema.Model, {"name": "gru4rec", "hidden": True}, f"{PRETRAIN}.model.hidden", "valid integer"),
    (train_schema.Model, {"name": "sasrec", "chunks": 4}, f"{PRETRAIN}.model.chunks", "unknown setting"),
    (train_schema.Model, {"name": "ebm", "repeat": "yes"}, f"{PRETRAIN}.model.repeat", "valid boolean"),
    (train_schema.Model, {"repeat": {"mode_bias": 1.0}}, f"{PRETRAIN}.model.repeat.mode_bias", "unknown setting"),
    # the component's own check (END4RecConfig.problems), reported at the settings it concerns
    (train_schema.Model, {"name": "end4rec", "stage_epochs": [1, 2]}, f"{PRETRAIN}.model", "stage_epochs=[1, 2]"),
    (train_schema.RefreshTraining, {"patience": 0}, "steps.retune_head.parameters.training.patience", "greater than or equal to 1"),
    (tune_schema.Training, {"batch_size": "64"}, "steps.prompt_tune.parameters.training.batch_size", "integer"),
    (tune_schema.Settings, {"n_prompt": 2}, "steps.prompt_tune.parameters.settings.n_prompt", "unknown setting"),
    (data_schema.Split, {"cold_mode": "simulate"}, "steps.split.parameters.settings.cold_mode", "'simulated'"),
    (data_schema.Split, {"seed": 1}, "steps.split.parameters.settings.seed", "unknown setting"),
    (data_schema.Clean, {"min_user_events": -1}, "steps.clean.parameters.rules.min_user_events",
     "greater than or equal to 0"),
    (data_schema.ValidateRules, {"time_window": ["2017-11-25", "soon"]}, "steps.validate.parameters.rules", "soon"),
    (data_schema.Drift, {"thresholds": {"users_rel": "half"}}, "steps.validate.parameters.drift.thresholds.users_rel",
     "valid number"),
    (data_schema.MaxMalformedFraction, 2, "steps.ingest.parameters.max_malformed_fraction", "less than or equal"),
    # pipeline parameters
    (data_schema.Dataset, "movielens", "parameters.dataset", "'ml1m'"),
    (tune_schema.Tuning, "ppr", "parameters.tuning", "'ppr_light'"),
    (train_schema.BaseModelRef, {"version": 3}, "parameters.base_model.name", "required"),
    (train_schema.Seed, "42", "parameters.seed", "valid integer"),
])
def test_a_bad_value_is_refused_naming_its_key_path(tp, value, path, says):
    err = refused(tp, value)
    assert len(err.errors) == 1, err.errors
    where, message = err.errors[0]
    assert where == path and says in message, err.errors
    assert str(err).startswith(f"{path}: ")


def test_every_bad_key_is_named_at_once():
    err = refused(train_schema.Training, {"epochs": 2.5, "lr": "fast", "batch_size": 64})
    assert [path for path, _ in err.errors] == [f"{PRETRAIN}.training.epochs", f"{PRETRAIN}.training.lr"]
    assert str(err).startswith("2 config errors:")


def test_the_error_escapes_pydantic_as_zenml_validates_a_parameter():
    """ZenML checks a step parameter by validating a one-field pydantic model (``EntrypointFunctionDefinition.
    _validate_input_value``): the ConfigError must come out of it as is, not wrapped into a ValidationError (ZenML
    would replace that by its generic "Input validation failed for input 'training'")."""
    probe = create_model("input_validation_model", value=(train_schema.Training, ...))
    with pytest.raises(ConfigError, match=r"^steps\.pretrain\.parameters\.training\.epochs: "):
        probe(value={"epochs": "ten"})
    assert not issubclass(ConfigError, ValueError)


def test_valid_settings_reach_the_component_exactly_as_given():
    given = {"epochs": 3, "lr": 1, "valid_protocols": ["sampled"], "patience": None, "device": "cpu"}
    passed = settings_dict(given, train_schema.Training)
    assert passed == given and type(passed["lr"]) is int and type(passed["valid_protocols"]) is list
    assert passed is not given  # a copy: the component may change its dict freely
    model = {"max_len": 50, "hidden": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.2, "repeat": True}
    assert settings_dict(model, train_schema.Model) == model  # no name: sasrec, as pretrain reads it
    assert settings_dict(None, train_schema.Training) is None
    assert settings_dict({"name": "m"}, train_schema.BaseModelRef) == {"name": "m"}
    old = {"name": "sasrec", "n_blocks": 2}  # a stored config's old option name is still read
    assert settings_dict(old, train_schema.Model) == old


def test_the_schemas_follow_the_config_dataclasses():
    """Keys come from the dataclass fields (a field added to a config is a setting at once), minus what the data or
    the pipeline fills in; a bound or choice on a field that does not exist fails when the schema is built."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(train_schema.TrainingSettings.model_fields) == fields - {"seed"}
    assert set(tune_schema.TuningTraining.model_fields) == fields - {"seed"}
    assert tune_schema.TuningTraining.model_fields["epochs"].default == 20 and \
        tune_schema.TuningTraining.model_fields["valid_set"].default == "cold_valid"  # tune's defaults
    assert set(data_schema.SplitSettings.model_fields) == {f.name for f in dataclasses.fields(SplitConfig)} - {"seed"}
    assert set(train_schema.MODEL_SCHEMAS) == set(ARCHITECTURES) - {"repeat"}
    for name, schema in train_schema.MODEL_SCHEMAS.items():
        cfg_fields = {f.name for f in dataclasses.fields(ARCHITECTURES[name][1])}
        expected = cfg_fields - {"n_items", "n_behaviors"} | {"name", "repeat"} | set(RENAMED.get(name, {}))
        assert set(schema.model_fields) == expected, name
    with pytest.raises(TypeError, match="epoch"):
        schema_of(TrainConfig, bounds={"epoch": {"ge": 1}})


def test_dataset_and_mapping_go_together():
    mapping = {"user_id": "u", "item_id": "i", "timestamp": "t"}
    assert data_schema.pipeline_mapping("generic", mapping) == mapping
    assert data_schema.pipeline_mapping("ml1m", None) is None
    with pytest.raises(ConfigError, match="^parameters.mapping: only datasets"):
        data_schema.pipeline_mapping("ml1m", mapping)
    with pytest.raises(ConfigError, match="^parameters.mapping: dataset 'generic' reads its columns"):
        data_schema.pipeline_mapping("generic", None)
    err = refused(data_schema.Mapping, {"user_id": "u", "item_id": "i"})
    assert err.errors == [("parameters.mapping.timestamp", "required setting missing")]


def test_located_names_the_place_it_is_given():
    tp = located(int, "steps.x.parameters.y")
    with pytest.raises(ConfigError, match=r"^steps\.x\.parameters\.y: "):
        settings_dict([], tp)
