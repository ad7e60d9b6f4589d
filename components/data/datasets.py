"""Per-dataset facts the pipeline needs beyond the raw format: behavior vocabularies and validation defaults."""

from __future__ import annotations

from components.data.schema import BEHAVIORS
from components.settings import from_dict


def behaviors_for(dataset: str, mapping: dict | None = None) -> list[str]:
    if dataset in BEHAVIORS:
        return list(BEHAVIORS[dataset])
    if dataset == "generic":
        values = (mapping or {}).get("behavior_values")
        return list(dict.fromkeys(values.values())) if values else ["interact"]
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(BEHAVIORS) + ['generic']}")


#: ``history_items`` default per dataset (components.data.split): single-consumption data (a movie is rated once)
#: excludes history items; every multi-behavior log keeps them as candidates (repeat buys are the common case).
HISTORY_ITEMS_DEFAULT = {"ml1m": "excluded"}


def default_history_items(dataset: str | None) -> str:
    """``excluded`` for ml1m, ``candidates`` for taobao, ijcai15, cikm2019, generic (and an unnamed dataset)."""
    return HISTORY_ITEMS_DEFAULT.get(dataset or "", "candidates")


def validation_config(dataset: str, rules: dict | None, mapping: dict | None = None):
    """The dataset's behavior set plus the config's rules (time window, minimum users, profile domains)."""
    from components.data.validation import ValidationConfig

    values = {"behaviors": behaviors_for(dataset, mapping), **(rules or {})}
    return from_dict(ValidationConfig, values, where="steps.validate.parameters.rules")
