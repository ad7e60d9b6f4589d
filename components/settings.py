"""Turn a YAML mapping into a component's config dataclass, refusing keys it does not know.

ZenML passes step parameters through as plain dicts; a misspelled key there would otherwise be silently ignored
and the run would use a default the user did not mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def refuse_unknown(keys: Iterable[str], known: Iterable[str], *, where: str) -> None:
    """``ValueError`` naming ``where``, the keys outside ``known`` and the allowed ones, if there are any: the
    project's one unknown-key check."""
    known = sorted(known)
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; allowed: {known}")


def from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str) -> T:
    values = dict(values or {})
    refuse_unknown(values, (f.name for f in dataclasses.fields(cls)), where=where)
    for f in dataclasses.fields(cls):
        # YAML has no tuples; dataclasses that want one get it here.
        if f.name in values and isinstance(values[f.name], list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)
