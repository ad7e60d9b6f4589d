"""Turn a YAML mapping into a component's config dataclass, refusing keys it does not know.

ZenML passes step parameters through as plain dicts; a misspelled key there would otherwise be silently ignored
and the run would use a default the user did not mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str) -> T:
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; allowed: {sorted(known)}")
    for f in dataclasses.fields(cls):
        # YAML has no tuples; dataclasses that want one get it here.
        if f.name in values and isinstance(values[f.name], list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)
