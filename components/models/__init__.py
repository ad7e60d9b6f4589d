"""Recommender models: tensors in, scores out.  Every model is a :class:`components.models.base.Recommender`
(``loss`` on a ``Batch``, ``score_all`` / ``score_items`` over left-padded histories, ``max_len``): the one contract
that training, evaluation and serving call."""

from components.models.ebm import EBM, EBMConfig
from components.models.popularity import PopularityModel
from components.models.sasrec import SASRec, SASRecConfig

__all__ = ["EBM", "EBMConfig", "PopularityModel", "SASRec", "SASRecConfig"]
