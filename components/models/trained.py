"""A trained model as data: its architecture, the tuning method that made it (if any), its config, its weights
(tensors only) and how it was trained.

This is what travels between pipeline steps and into the registry.  It holds no nn.Module, so nothing ever
pickles a class: ``build()`` makes a fresh module from the config (``components.models.registry``) and loads the
weights into it.  A tuned model's ``architecture`` is its pre-trained base's (``sasrec``, ``ebm``, ...), its
``method`` the tuning method (``cpl``, ...) and its ``config`` the method's ``TuningConfig``, which holds the
base's config; an encoder trained from scratch has ``method`` None.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from components.models.registry import build_model

#: What ``model.json`` holds besides the weights (``weights.safetensors``).
META_FIELDS = ("architecture", "method", "config", "train_config", "history", "best_epoch", "best_metric", "info",
               "lineage")
WEIGHTS_FILE, META_FILE = "weights.safetensors", "model.json"

#: How tuned models were named before they carried a ``method`` (``tuned-cpl``): read, never written.
LEGACY_TUNED_PREFIX = "tuned-"


def from_stored(architecture: str, config: dict, method: str | None = None) -> tuple[str, str | None]:
    """(architecture, method) of a model as stored by any version of this project: an artifact or a registered
    bundle written before tuned models carried a ``method`` names them ``tuned-<method>``."""
    if method is None and architecture.startswith(LEGACY_TUNED_PREFIX):
        return str(config["base_architecture"]), architecture[len(LEGACY_TUNED_PREFIX):]
    return architecture, method


@dataclass
class Lineage:
    """A model's place in the model registry (``components.registry``).

    ``source``: the registered version this model was loaded as (``name``, ``version``, ``run_id``; None for a
    model trained in this run): registering a model tuned over it reuses that version as its base.  ``tags``: what
    the model's own registered version records besides the usual tags (a refresh names the base version and the
    head it re-tuned)."""

    source: dict | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, stored: "Lineage | dict | None", info: dict) -> "Lineage":
        """The lineage as stored; for a model stored before it had one, read from the ``info`` keys that held it
        (``registry`` and ``registry_tags``, which leave ``info``)."""
        lineage = cls(**stored) if isinstance(stored, dict) else stored or cls()
        if lineage.source is None and "registry" in info:
            lineage.source = info.pop("registry")
        if not lineage.tags and "registry_tags" in info:
            lineage.tags = info.pop("registry_tags") or {}
        return lineage


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
    method: str | None = None  # the tuning method that made it; None for a model trained from scratch
    lineage: Lineage = field(default_factory=Lineage)

    def __post_init__(self) -> None:
        self.architecture, self.method = from_stored(self.architecture, self.config, self.method)
        self.lineage = Lineage.of(self.lineage, self.info)

    @property
    def name(self) -> str:
        """What the model is called in reports, metric prefixes and registry names: the tuning method, else the
        architecture."""
        return self.method or self.architecture

    @property
    def is_tuned(self) -> bool:
        return self.method is not None

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        model = build_model(self.architecture, self.config, self.method)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()

    # ---- the one stored form: weights.safetensors + model.json (the ZenML materializer, the multi-GPU launcher) ----
    def to_bytes(self) -> tuple[bytes, str]:
        """(the weights as safetensors bytes, the description as JSON text)."""
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        meta = {k: getattr(self, k) for k in META_FIELDS} | {"lineage": asdict(self.lineage)}
        return save(state), json.dumps(meta, indent=1, default=str)

    @classmethod
    def from_bytes(cls, weights: bytes, meta_json: str) -> "TrainedModel":
        """The model ``to_bytes`` gave (also one stored before tuned models carried ``method`` or ``lineage``)."""
        from safetensors.torch import load

        return cls(state_dict=load(weights), **json.loads(meta_json))

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights, meta = self.to_bytes()
        (directory / WEIGHTS_FILE).write_bytes(weights)
        (directory / META_FILE).write_text(meta)

    @classmethod
    def load(cls, directory: str | Path) -> "TrainedModel":
        directory = Path(directory)
        return cls.from_bytes((directory / WEIGHTS_FILE).read_bytes(), (directory / META_FILE).read_text())

    @property
    def n_parameters(self) -> int:
        return int(sum(t.numel() for t in self.state_dict.values() if t.is_floating_point()))
