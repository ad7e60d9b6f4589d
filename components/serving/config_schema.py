"""The typed schema of the batch step's ``approximate`` parameter (``steps.recommend_all.parameters.approximate``),
derived from :class:`components.serving.ann.IndexConfig` like every other step parameter's
(``components.settings.schema_of``): ZenML checks it when it compiles the run, before the first step."""

from __future__ import annotations

from typing import Optional

from components.serving.ann import IndexConfig
from components.settings import from_dict, located, schema_of

IndexSettings = schema_of(IndexConfig, name="IndexSettings", bounds={"m": {"ge": 4}, "ef_construction": {"ge": 1},
                                                                    "ef_search": {"ge": 1}},
                          check=lambda v: from_dict(IndexConfig, v, where="steps.recommend_all.parameters.approximate"))

#: ``approximate: {m, ef_construction, ef_search}`` (``{}``: the defaults) or absent / null: exact top-K.
Approximate = located(Optional[IndexSettings], "steps.recommend_all.parameters.approximate")
