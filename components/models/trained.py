"""A trained model as data: architecture name, its config, its weights (tensors only) and how it was trained.

This is what travels between pipeline steps and into the registry.  It holds no nn.Module, so nothing ever
pickles a class: ``build()`` makes a fresh module from the config and loads the weights into it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch
from torch import nn

#: architecture name -> (module, model class, config class).  New encoders register here.
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "sasrec": ("components.models.sasrec", "SASRec", "SASRecConfig"),
    "ebm": ("components.models.ebm", "EBM", "EBMConfig"),
    "end4rec": ("components.models.end4rec", "END4Rec", "END4RecConfig"),
    "pomrec": ("components.models.pomrec", "PoMRec", "PoMRecConfig"),
    # A repeat-aware head over any of the encoders above (config: encoder, encoder_config).
    "repeat": ("components.models.repeat", "RepeatAware", "RepeatAwareConfig"),
}


#: Prefix of a tuned model's architecture name (``tuned-ppr_light``): a pre-trained encoder wrapped by a tuning
#: method (components.tuning.methods); its config names the method and holds the encoder's own config.
TUNED_PREFIX = "tuned-"  # no colon: ZenML metadata keys refuse it


def model_classes(architecture: str) -> tuple[type[nn.Module], type]:
    if architecture.startswith(TUNED_PREFIX):
        from components.tuning.methods import METHODS, TunedRecommender, TuningConfig

        if architecture[len(TUNED_PREFIX):] not in METHODS:
            raise ValueError(f"unknown tuning method in {architecture!r}; known: {list(METHODS)}")
        return TunedRecommender, TuningConfig
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown model {architecture!r}; known: {sorted(ARCHITECTURES)}")
    module, model_cls, cfg_cls = ARCHITECTURES[architecture]
    mod = importlib.import_module(module)
    return getattr(mod, model_cls), getattr(mod, cfg_cls)


def build_model(architecture: str, config: dict) -> nn.Module:
    model_cls, cfg_cls = model_classes(architecture)
    return model_cls(cfg_cls(**config))


@dataclass
class TrainedModel:
    architecture: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    train_config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one dict per epoch: loss, seconds, validation metrics
    best_epoch: int = -1
    best_metric: dict = field(default_factory=dict)  # {"name": ..., "value": ...}
    info: dict = field(default_factory=dict)  # e.g. parameter count, device, wall time

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        model = build_model(self.architecture, self.config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()

    @property
    def n_parameters(self) -> int:
        return int(sum(t.numel() for t in self.state_dict.values() if t.is_floating_point()))
