"""The one list of dataset formats: per dataset its name, behavior vocabulary, split default, reader and summary.

Everything that needs the list of datasets or a per-dataset fact derives it from ``FORMATS``: ``read_dataset``,
``components.data.datasets`` (``behaviors_for``, ``default_history_items``, validation), the config checks in
tests/.  No other module lists dataset names.  A new format is one file in this package (its ``BEHAVIORS`` and a
``read(raw_path, max_malformed_fraction, block_size)`` built on ``streaming.read_csv_file``) plus one line below,
plus a config under configs/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

# Plain ``import ... as``: ``from components.data.readers import taobao`` would also import the package's
# ``__init__``, which imports this module (tests/test_layers.py counts that as a cycle).
import components.data.readers.cikm2019 as cikm2019
import components.data.readers.generic as generic
import components.data.readers.ijcai15 as ijcai15
import components.data.readers.ml1m as ml1m
import components.data.readers.retailrocket as retailrocket
import components.data.readers.seqtxt as seqtxt
import components.data.readers.taobao as taobao

#: What a format's ``read`` returns: interactions, profiles (zero rows when the dataset has none), one report per
#: file read.
ReadOutput = tuple[pa.Table, pa.Table, list[dict]]


@dataclass(frozen=True)
class DatasetFormat:
    #: The pipeline's ``dataset`` parameter.
    name: str
    #: Canonical behavior names in the order of their codes (code = index + 1 after cleaning; 0 is padding); the
    #: last name of a multi-behavior log is its usual target (buy).  A mapped format's default vocabulary.
    behaviors: tuple[str, ...]
    #: ``history_items`` default of components.data.split: "candidates" (multi-behavior logs, where repeat buys are
    #: the common case) or "excluded" (single-consumption data: a movie is rated once).
    history_items: str
    #: ``read(raw_path, max_malformed_fraction, block_size)``; a mapped format also gets the parsed mapping last.
    read: Callable[..., ReadOutput]
    #: One line for humans.
    description: str
    #: The mapping class of a format read through the user's column mapping (``from_any``, ``vocabulary_of``).
    mapping: type[generic.GenericMapping] | None = None
    #: Whether the format reads unrelated data sets under one ``dataset`` value (a mapped CSV/Parquet, any
    #: "user item item ..." text file): then a config must name its registered model (``model_name``).
    any_data: bool = False

    def vocabulary(self, mapping: generic.GenericMapping | dict | None = None) -> tuple[str, ...]:
        """Behavior names in code order; a mapped format's come from the mapping (a raw dict is not validated)."""
        return self.behaviors if self.mapping is None else self.mapping.vocabulary_of(mapping)


FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    DatasetFormat("taobao", taobao.BEHAVIORS, "candidates", taobao.read,
                  "Taobao UserBehavior (Tianchi 649): headerless pv / cart / fav / buy log, Unix seconds"),
    DatasetFormat("ijcai15", ijcai15.BEHAVIORS, "candidates", ijcai15.read,
                  "IJCAI-15 Tmall repeat buyers (Tianchi 42): user log with day stamps, optional age / gender"),
    DatasetFormat("cikm2019", cikm2019.BEHAVIORS, "candidates", cikm2019.read,
                  "CIKM 2019 EComm AI round folder: behavior log, optional item attributes and user profiles"),
    DatasetFormat("ml1m", ml1m.BEHAVIORS, "excluded", ml1m.read,
                  "MovieLens-1M ratings as three levels (RecBole atomic or GroupLens .dat files), with profiles"),
    DatasetFormat("retailrocket", retailrocket.BEHAVIORS, "candidates", retailrocket.read,
                  "RetailRocket (Kaggle) events.csv: view / addtocart / transaction, milliseconds"),
    DatasetFormat("seqtxt", seqtxt.BEHAVIORS, "excluded", seqtxt.read,
                  "sequences as text (SASRec / FMLP-Rec data files): 'user item item ...' per line, items in time "
                  "order, one behavior; timestamps are positions", any_data=True),
    DatasetFormat("generic", generic.BEHAVIORS, "candidates", generic.read,
                  "any CSV or Parquet log, its columns named by a GenericMapping", mapping=generic.GenericMapping,
                  any_data=True),
)}

#: Every dataset name, in registry order.
DATASETS = tuple(FORMATS)


def format_for(dataset: str) -> DatasetFormat:
    """The registered format ``dataset``; ``ValueError`` naming every dataset when there is none."""
    fmt = FORMATS.get(dataset)
    if fmt is None:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    return fmt
