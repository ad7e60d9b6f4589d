"""The champion decision: does a newly registered version take the champion alias?  A pure function of the two
versions' standings; ``components.registry.champion`` measures them and applies the outcome under a lock.

The champion's figure is not the number stored on it: that was measured on the champion's own validation split,
which after a refresh on fresh data holds other users.  Before deciding, the gate scores the current champion on
the challenger's validation split with the challenger's metric and protocol; the decision compares the two figures
measured on the same instances and candidates.

The rule:

- the first version of a name becomes the champion;
- a champion selected on another metric (the name carries split, protocol and negatives: ``sampled99`` is not
  ``sampled100``) or under another ``history_items`` setting is never replaced automatically: the configuration
  changed, which is a person's decision (move the alias by hand, or keep the configs aligned);
- a champion that could not be scored on the challenger's data (another item or behavior vocabulary, a version
  that fails its integrity check) is handled by ``unscorable``: ``"keep"`` (default) keeps it, ``"promote"``
  lets the challenger take over; the reason says which and why;
- otherwise the challenger must beat the champion's figure on the challenger's data strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

#: What to do when the champion cannot be scored on the challenger's data.
UNSCORABLE = ("keep", "promote")


@dataclass(frozen=True)
class Standing:
    """A version's claim in the decision: its number, the metric it was selected on, its value (for the champion:
    re-measured on the challenger's data; None: not measured), the split's ``history_items`` setting, the value
    recorded at its own registration (``recorded``) and, for a champion that could not be scored on the
    challenger's data, why (``unscored``)."""

    version: str
    metric: str | None
    value: float | None
    history_items: str = "excluded"
    recorded: float | None = None
    unscored: str | None = None

    @classmethod
    def from_tags(cls, version: str | int, tags: Mapping[str, str]) -> "Standing":
        """A registered version's standing as recorded by ``register_recommender`` (a version registered before
        ``history_items`` existed excluded history items).  ``value`` is the recorded figure; the gate replaces
        it with the figure measured on the challenger's data (``dataclasses.replace``)."""
        value = tags.get("selection_value")
        value = None if value is None else float(value)
        return cls(version=str(version), metric=tags.get("selection_metric"), value=value,
                   history_items=tags.get("history_items", "excluded"), recorded=value)


@dataclass(frozen=True)
class Promotion:
    """The decision: whether the challenger takes the alias, and why (the text tags the version)."""

    promote: bool
    reason: str


def decide_promotion(name: str, challenger: Standing, champion: Standing | None, *,
                     unscorable: str = "keep") -> Promotion:
    """Whether ``challenger`` (a new version of ``name``, with a value) replaces ``champion`` (None: ``name`` has
    no champion yet; else its value measured on the challenger's validation split, or ``unscored`` saying why it
    could not be)."""
    if unscorable not in UNSCORABLE:
        raise ValueError(f"unscorable={unscorable!r}: expected one of {UNSCORABLE}")
    if challenger.metric is None or challenger.value is None:
        raise ValueError(f"{name} v{challenger.version}: a challenger needs its selection metric and value")
    metric, value, v = challenger.metric, challenger.value, challenger.version
    if champion is None:
        return Promotion(True, f"first version of {name}: {metric}={value:.4f}")
    c = champion.version
    if champion.metric != metric:
        return Promotion(False, f"not promoted: champion v{c} was selected on {champion.metric or 'no metric'}, "
                                f"v{v} on {metric}; different metrics are never compared (align the configs' "
                                "selection_metric, or move the alias by hand)")
    if champion.history_items != challenger.history_items:
        return Promotion(False, f"not promoted: champion v{c} was measured with history_items "
                                f"{champion.history_items}, v{v} with {challenger.history_items}; different "
                                "protocols are never compared (move the alias by hand)")
    if champion.unscored is not None or champion.value is None:
        why = champion.unscored or "no figure"
        if unscorable == "promote":
            return Promotion(True, f"champion v{c} cannot be scored on v{v}'s validation data ({why}); promoting "
                                   f"v{v} ({metric} {value:.4f}) as configured (unscorable: promote)")
        return Promotion(False, f"not promoted: champion v{c} cannot be scored on v{v}'s validation data ({why}); "
                                f"v{v} ({metric} {value:.4f}) kept without the alias (unscorable: keep; move the "
                                "alias by hand, or register with unscorable: promote)")
    recorded = "" if champion.recorded is None else f"; {champion.recorded:.4f} on its own split"
    on = f"champion v{c} ({champion.value:.4f} on v{v}'s validation split{recorded})"
    if value > champion.value:
        return Promotion(True, f"{metric} {value:.4f} beats {on}")
    return Promotion(False, f"{metric} {value:.4f} does not beat {on}; kept without the alias")
