"""Every model the project can build, by name: the encoders and heads (``ARCHITECTURES``) and the tuning methods'
wrappers (``components.models.tuned``).  A new encoder is one file plus one line here.

A wrapper (the repeat head, a tuned model) is built around a module this registry builds first (its encoder, its
pre-trained base), so wrappers import nothing of the registry and the imports run one way.
"""

from __future__ import annotations

from torch import nn

from components.models.ebm import EBM, EBMConfig
from components.models.end4rec import END4Rec, END4RecConfig
from components.models.gru4rec import GRU4Rec, GRU4RecConfig
from components.models.pomrec import PoMRec, PoMRecConfig
from components.models.repeat import RepeatAware, RepeatAwareConfig
from components.models.sasrec import SASRec, SASRecConfig
from components.models.tuned.methods import TuningConfig, method_classes, method_config

#: architecture name -> (model class, config class).
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "ebm": (EBM, EBMConfig),
    "end4rec": (END4Rec, END4RecConfig),
    "pomrec": (PoMRec, PoMRecConfig),
    "gru4rec": (GRU4Rec, GRU4RecConfig),
    # A repeat-aware head over any of the encoders above (config: encoder, encoder_config).
    "repeat": (RepeatAware, RepeatAwareConfig),
}


def model_classes(architecture: str, method: str | None = None) -> tuple[type[nn.Module], type]:
    """(model class, config class) of an architecture, or of a tuning method's wrapper when ``method`` is set."""
    if method is not None:
        return method_classes(method)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown model {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


#: Options renamed so that every encoder takes the same names; configs stored before the rename are read with the
#: new ones.
RENAMED = {"sasrec": {"n_blocks": "n_layers"}}


def upgrade_config(architecture: str, config: dict) -> dict:
    """An encoder config as stored by any version of this project, with its options under their current names."""
    renamed = RENAMED.get(architecture, {})
    return {renamed.get(k, k): v for k, v in config.items()}


def build_tuned(cfg: TuningConfig) -> nn.Module:
    """A tuning method's model from its config, around a fresh base built from the base settings it holds."""
    return method_classes(cfg.method)[0](cfg, build_model(cfg.base_architecture, cfg.base_config))


def build_model(architecture: str, config: dict, method: str | None = None) -> nn.Module:
    """A fresh module from its config dict (weights initialised from the config's seed)."""
    if method is not None:
        # A config stored when every method's settings sat in one config carries the others' too: dropped.
        return build_tuned(method_config(method, config, strict=False, where=f"{method} model config"))
    model_cls, cfg_cls = model_classes(architecture)
    cfg = cfg_cls(**upgrade_config(architecture, config))
    if model_cls is RepeatAware:
        return RepeatAware(cfg, build_model(cfg.encoder, cfg.encoder_dict()))
    return model_cls(cfg)
