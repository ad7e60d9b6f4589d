"""Per-dataset facts the pipeline needs beyond the raw format: behavior vocabularies, split and validation defaults.

Every fact here is read from the one list of formats, ``components/data/readers/registry.py``.
"""

from __future__ import annotations

from components.data.readers.registry import DATASETS, FORMATS, format_for
from components.settings import from_dict

__all__ = ["DATASETS", "behaviors_for", "default_history_items", "validation_config"]


def behaviors_for(dataset: str, mapping: dict | None = None) -> list[str]:
    """The dataset's behavior names in code order (a mapped format's from ``mapping``); ``ValueError`` naming every
    dataset for an unknown one."""
    return list(format_for(dataset).vocabulary(mapping))


def default_history_items(dataset: str | None) -> str:
    """``history_items`` default (components.data.split): the dataset's registry entry, ``excluded`` for
    single-consumption data (a movie is rated once), ``candidates`` for every multi-behavior log, where repeat buys
    are the common case; ``candidates`` for an unnamed (or unregistered) dataset too."""
    fmt = FORMATS.get(dataset or "")
    return fmt.history_items if fmt is not None else "candidates"


def validation_config(dataset: str, rules: dict | None, mapping: dict | None = None):
    """The dataset's behavior set plus the config's rules (time window, minimum users, profile domains)."""
    from components.data.validation import ValidationConfig

    values = {"behaviors": behaviors_for(dataset, mapping), **(rules or {})}
    return from_dict(ValidationConfig, values, where="steps.validate.parameters.rules")
