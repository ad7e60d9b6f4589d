"""The champion decision: does a newly registered version take the champion alias?  A pure function of the two
versions' figures; ``components.registry.register`` reads them from the registry and applies the outcome.

The rule: the first version of a name becomes the champion; a champion without a comparable figure (another
selection metric, whose name carries the protocol, or one measured with history items as candidates when the
new one excluded them, or the reverse) gives way; otherwise the new version must beat the champion's value
strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Standing:
    """A version's claim in the decision: its number, the metric it was selected on and its value (None: the
    version carries no value), and the split's ``history_items`` setting the value was measured under."""

    version: str
    metric: str | None
    value: float | None
    history_items: str = "excluded"

    @classmethod
    def from_tags(cls, version: str | int, tags: Mapping[str, str]) -> "Standing":
        """A registered version's standing from the tags ``register_recommender`` set (a version registered
        before ``history_items`` existed excluded history items)."""
        value = tags.get("selection_value")
        return cls(version=str(version), metric=tags.get("selection_metric"),
                   value=None if value is None else float(value), history_items=tags.get("history_items", "excluded"))


@dataclass(frozen=True)
class Promotion:
    """The decision: whether the challenger takes the alias, and why (the text tags the version)."""

    promote: bool
    reason: str


def decide_promotion(name: str, challenger: Standing, champion: Standing | None) -> Promotion:
    """Whether ``challenger`` (a new version of ``name``, with a value) replaces ``champion`` (None: ``name`` has
    no champion yet)."""
    if challenger.metric is None or challenger.value is None:
        raise ValueError(f"{name} v{challenger.version}: a challenger needs its selection metric and value")
    metric, value = challenger.metric, challenger.value
    if champion is None:
        return Promotion(True, f"first version of {name}: {metric}={value:.4f}")
    # A figure measured with history items as candidates is not comparable with one that excluded them.
    comparable = champion.value is not None and champion.metric == metric and \
        champion.history_items == challenger.history_items
    if not comparable:
        return Promotion(True, f"champion v{champion.version} has no comparable {metric} "
                               f"(history_items {challenger.history_items}); promoting v{challenger.version} "
                               f"({value:.4f})")
    if value > champion.value:
        return Promotion(True, f"{metric} {value:.4f} beats champion v{champion.version} ({champion.value:.4f})")
    return Promotion(False, f"{metric} {value:.4f} does not beat champion v{champion.version} "
                            f"({champion.value:.4f}); kept without the alias")
