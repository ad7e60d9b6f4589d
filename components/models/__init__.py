"""Recommender models: tensors in, scores out.  Each exposes ``score_all`` and ``score_items`` over left-padded
histories (see ``components.training.evaluation.Scorer``); trainable ones also ``encode`` and
``output_embeddings`` (see ``components.training.trainer``)."""

from components.models.ebm import EBM, EBMConfig
from components.models.popularity import PopularityModel
from components.models.sasrec import SASRec, SASRecConfig

__all__ = ["EBM", "EBMConfig", "PopularityModel", "SASRec", "SASRecConfig"]
