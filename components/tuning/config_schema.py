"""The typed schemas of prompt tuning's parameters: the pipelines' ``tuning`` (a method of
components/models/tuned/methods.py, or ``none``) and the prompt_tune step's ``settings`` and ``training``, derived
from the methods' config dataclasses (``components.settings.schema_of``) and checked by ZenML when it compiles a
run, before the first step starts.

``settings`` takes the keys of any method's config (``TuningConfig`` and its subclasses) but those the base model
and the data fill in; the step's method is a pipeline parameter, so which of those keys the chosen method takes is
checked when prompt_tune parses them (``components.models.tuned.methods.method_config``, naming the keys it knows).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal, Optional

from components.models.tuned.methods import METHODS, REGISTRY
from components.settings import located, schema_of, schema_type
from components.training.config_schema import training_schema
from components.tuning.tune import TUNING_TRAIN_DEFAULTS

#: ``parameters.tuning``: a registered method, or ``none`` (pre-training only).
TuningMethod = Literal[("none", *METHODS)]  # type: ignore[valid-type]

#: TuningConfig fields the pre-trained base and the data fill in (components.tuning.tune.tuning_config).
FILLED_IN = ("method", "base_architecture", "base_config", "n_items", "target_behaviors", "profile_vocab")


def _every_method_field() -> type:
    """One dataclass with the fields of every method's config (the first method's default where two differ)."""
    seen: dict[str, tuple] = {}
    for _, cfg_cls in REGISTRY.values():
        hints = typing.get_type_hints(cfg_cls)
        for f in dataclasses.fields(cfg_cls):
            if f.name not in seen:
                spec = (f.name, hints[f.name], dataclasses.field(default=f.default, default_factory=f.default_factory))
                seen[f.name] = spec
    required = [s for s in seen.values() if s[2].default is dataclasses.MISSING
                and s[2].default_factory is dataclasses.MISSING]
    return dataclasses.make_dataclass("TuningSettingsFields", required + [s for s in seen.values() if s not in required])


TuningSettings = schema_of(_every_method_field(), name="TuningSettings", exclude=FILLED_IN,
                           bounds={"profile_dim": {"ge": 1}, "prompt_hidden": {"ge": 1}},
                           # profile_fields: None (or left out) takes the data's profile fields (select_fields)
                           fields={"profile_fields": (Optional[list[schema_type(str)]], None)})
TuningTraining = training_schema("TuningTrainingSettings", "steps.prompt_tune.parameters.training",
                                 defaults=TUNING_TRAIN_DEFAULTS)

# ---- the parameters, where each sits in a run's YAML ---------------------------------------------------------------
Tuning = located(TuningMethod, "parameters.tuning")
Settings = located(Optional[TuningSettings], "steps.prompt_tune.parameters.settings")
Training = located(Optional[TuningTraining], "steps.prompt_tune.parameters.training")
