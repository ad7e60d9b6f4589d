"""The typed schemas of the training steps' parameters (``model``, ``training``) and of a registered model named by
a pipeline (``base_model``, ``registered_model``), derived from the components' config dataclasses
(``components.settings.schema_of``): ZenML checks a run's YAML against them when it compiles the run, before the
first step starts, and a refused value names its full key path.

``model`` is one schema per encoder of the model registry (components/models/registry.py), told apart by ``name``
(a discriminated union; no ``name`` means ``sasrec``, as ``components.training.pretrain.model_config`` reads it):
each takes its encoder config's fields but the sizes the data fills in, plus ``repeat`` (``true`` or the repeat
head's options) and the old names of renamed options.  What is stated here and not in the dataclasses: bounds of
the options every encoder shares (those an encoder adds are checked by its own config) and of the trainer's.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Tag, create_model

from components.models.losses import LOSSES
from components.models.registry import ARCHITECTURES, RENAMED
from components.models.repeat import RepeatAwareConfig
from components.settings import branch_label, from_dict, located, schema_of, schema_type, settings_base
from components.training.trainer import TrainConfig

# ---- training ---------------------------------------------------------------------------------------------------
#: Bounds the trainer's options must keep (TrainConfig checks some of them itself, more loosely: it takes epochs=0
#: for staged training's internal use, which no config asks for).
TRAIN_BOUNDS = {"epochs": {"ge": 1}, "batch_size": {"ge": 1}, "lr": {"gt": 0.0}, "weight_decay": {"ge": 0.0},
                "patience": {"ge": 1}, "valid_batch_size": {"ge": 1}, "grad_clip": {"gt": 0.0}, "eval_every": {"ge": 1},
                "max_steps_per_epoch": {"ge": 1}, "num_threads": {"ge": 1}, "sampled_negatives": {"ge": 1},
                "negative_power": {"ge": 0.0}}
TRAIN_CHOICES = {"loss": LOSSES, "train_on": ("target", "all"), "valid_protocols": ("sampled", "full")}


def training_schema(name: str, where: str, defaults: dict | None = None) -> type:
    """The trainer's settings (TrainConfig but ``seed``, which is the pipeline's) as a step at ``where`` reads them;
    ``defaults``: the step's own defaults over TrainConfig's."""
    return schema_of(TrainConfig, name=name, exclude=("seed",), bounds=TRAIN_BOUNDS, choices=TRAIN_CHOICES,
                     defaults=defaults, check=lambda v: from_dict(TrainConfig, v, where=where))


TrainingSettings = training_schema("TrainingSettings", "steps.pretrain.parameters.training")

# ---- model ------------------------------------------------------------------------------------------------------
#: Bounds of the options every encoder takes (components.models.base.EncoderConfig).
ENCODER_BOUNDS = {"max_len": {"ge": 1}, "hidden": {"ge": 1}, "n_layers": {"ge": 0}, "n_heads": {"ge": 1},
                  "dropout": {"ge": 0.0, "lt": 1.0}}
#: Architectures that wrap another (the repeat head): chosen with ``repeat:``, not by ``name``.
WRAPPERS = ("repeat",)
ENCODERS = tuple(a for a in ARCHITECTURES if a not in WRAPPERS)
DEFAULT_ENCODER = "sasrec"  # components.training.pretrain.model_config

RepeatOptions = schema_of(RepeatAwareConfig, name="RepeatOptions",
                          exclude=("n_items", "n_behaviors", "encoder", "encoder_config"))
_REPEAT_TRUE, _REPEAT_OPTIONS = branch_label("repeat=flag"), branch_label("repeat=options")
Repeat = Annotated[Union[Annotated[schema_type(bool), Tag(_REPEAT_TRUE)], Annotated[RepeatOptions, Tag(_REPEAT_OPTIONS)]],
                   Discriminator(lambda v: _REPEAT_OPTIONS if isinstance(v, (dict, RepeatOptions)) else _REPEAT_TRUE)]


def _model_check(values: dict) -> None:
    from components.training.pretrain import model_config

    # The encoder's (and repeat head's) config parsed as pretrain parses it, with stand-in catalogue sizes.
    model_config(SimpleNamespace(n_items=1, n_behaviors=1), values)


def _encoder_schema(name: str) -> type:
    cfg_cls = ARCHITECTURES[name][1]
    fields: dict[str, Any] = {"name": (Literal[name], name), "repeat": (Repeat, False)}
    hints = schema_of(cfg_cls, exclude=("n_items", "n_behaviors")).model_fields
    for old, new in RENAMED.get(name, {}).items():  # stored configs' names, read under the new ones
        fields[old] = (Optional[hints[new].annotation], None)
    return schema_of(cfg_cls, name=f"{name}_model", exclude=("n_items", "n_behaviors"),
                     bounds={k: v for k, v in ENCODER_BOUNDS.items() if k in cfg_cls.__dataclass_fields__},
                     fields=fields, check=_model_check)


MODEL_SCHEMAS = {name: _encoder_schema(name) for name in ENCODERS}


def _model_tag(value: Any) -> str | None:
    name = value.get("name", DEFAULT_ENCODER) if isinstance(value, dict) else getattr(value, "name", None)
    return f"model={name}"


ModelSettings = Annotated[
    Union[tuple(Annotated[schema, Tag(branch_label(f"model={name}"))] for name, schema in MODEL_SCHEMAS.items())],
    Discriminator(_model_tag, custom_error_type="unknown_name",
                  custom_error_message=f"unknown model name; known: {list(ENCODERS)}"),
]

# ---- a registered model named by a pipeline ----------------------------------------------------------------------
#: ``{name, version}`` (no version: the champion).
ModelRef = create_model(
    "ModelRef", __base__=settings_base(), __doc__="A registered model: its name and version (no version: the champion).",
    name=(schema_type(str), ...), version=(Optional[Union[schema_type(int), schema_type(str)]], None))
branch_label("ModelRef")

# ---- the parameters, where each sits in a run's YAML ---------------------------------------------------------------
Model = located(Optional[ModelSettings], "steps.pretrain.parameters.model")
Training = located(Optional[TrainingSettings], "steps.pretrain.parameters.training")
RefreshTraining = located(Optional[training_schema("RefreshTrainingSettings", "steps.retune_head.parameters.training")],
                          "steps.retune_head.parameters.training")
Seed = located(schema_type(int), "parameters.seed")
BaseModelRef = located(Optional[ModelRef], "parameters.base_model")
RegisteredModel = located(Optional[ModelRef], "parameters.registered_model")
EvaluateKs = located(Optional[list[schema_type(int, bounds={"ge": 1})]], "steps.evaluate.parameters.ks")
EvaluateBatchSize = located(schema_type(int, bounds={"ge": 1}), "steps.evaluate.parameters.batch_size")
