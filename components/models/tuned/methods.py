"""Tuning a pre-trained encoder for cold-start users: full fine-tuning, PPR (light / full), CPL and PoMRec.

The tuning methods, one file each in this package, over the shared base (``base.py``: the wrapped encoder, the
profile side model, the zero-shot position, causal states, the loss):

``finetune``  (``finetune.py``) every base weight tuned, plus the profile side model.  PPR's fair baseline.
``ppr_light`` / ``ppr_full`` (``ppr.py``) PPR's profile-generated prompt tokens and prompt contrastive loss,
              base frozen / tuned.
``cpl``       (``cpl.py``) DPCPL's Customized Prompt Learning: factorized gated, layer-wise, causal per-position
              prompts from the profile and the behavior-type sequence, compactness regulariser; base frozen.
``pomrec``    (``pomrec.py``) PoMRec's prompt-based multi-interest head over the frozen encoder.

A new method is one file (a :class:`~components.models.tuned.base.TunedRecommender` subclass and, when it has
settings of its own, a :class:`~components.models.tuned.base.TuningConfig` subclass) plus one line in
``REGISTRY`` below.
"""

from __future__ import annotations

from components.models.tuned.base import TunedRecommender, TuningConfig, resample_clashes
from components.models.tuned.cpl import CPL, CPLConfig
from components.models.tuned.finetune import Finetune
from components.models.tuned.pomrec import PoMRecHead, PoMRecTuningConfig
from components.models.tuned.ppr import PPRConfig, PPRFull, PPRLight
from components.settings import from_dict

#: method name -> (model class, config class).
REGISTRY: dict[str, tuple[type[TunedRecommender], type[TuningConfig]]] = {
    "finetune": (Finetune, TuningConfig),
    "ppr_light": (PPRLight, PPRConfig),
    "ppr_full": (PPRFull, PPRConfig),
    "cpl": (CPL, CPLConfig),
    "pomrec": (PoMRecHead, PoMRecTuningConfig),
}
METHODS = tuple(REGISTRY)
#: Methods whose base encoder stays frozen (verified bit-identical after tuning).
FROZEN_BASE = tuple(m for m, (cls, _) in REGISTRY.items() if cls.frozen_base)

__all__ = ["FROZEN_BASE", "METHODS", "REGISTRY", "TunedRecommender", "TuningConfig", "method_classes",
           "method_config", "resample_clashes"]


def method_classes(method: str) -> tuple[type[TunedRecommender], type[TuningConfig]]:
    if method not in REGISTRY:
        raise ValueError(f"unknown tuning method {method!r}; known: {list(METHODS)}")
    return REGISTRY[method]


def method_config(method: str, values: dict, *, strict: bool = True, where: str = "tuning") -> TuningConfig:
    """The method's config from ``values`` (``method`` set from the first argument).  ``strict``: a key the
    method does not know raises, naming the ones it knows; otherwise such keys are dropped (a config stored by a
    version of this project in which every method's settings sat in one config)."""
    cfg_cls = method_classes(method)[1]
    values = {**values, "method": method}
    if not strict:
        known = set(cfg_cls.__dataclass_fields__)
        values = {k: v for k, v in values.items() if k in known}
    return from_dict(cfg_cls, values, where=where)
