"""Evaluation results, named with their protocol, and their readable rendering.

Metric keys are ``<target set>_<protocol>_<metric>``, e.g. ``test_sampled99_ndcg_at_10`` (target ranked
against the 99 sampled negatives stored with the split) or ``test_full_ndcg_at_10`` (ranked against every item).
Numbers of the two protocols are not comparable with each other; every table says which one it shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROTOCOL_TEXT = {
    "sampled": "the target ranked against {n} negatives sampled once per instance (seeded, stored with the split) "
               "from {pool}",
    "full": "the target ranked against every item in the catalogue{history}",
}
#: How each ``history_items`` setting (components.data.split) shapes the candidates of both protocols.
HISTORY_TEXT = {
    "candidates": {"pool": "every item but the target (the user's history included)",
                   "history": ", the user's history included"},
    "excluded": {"pool": "items the user never interacted with",
                 "history": ", the user's history items excluded (targets already in it dropped by the split)"},
}

_KEY = re.compile(r"^(?P<split>.+?)_(?P<protocol>sampled\d+|full)_(?P<metric>.+)$")


@dataclass
class EvaluationReport:
    dataset: str
    metrics: dict[str, dict[str, float]]  # model name -> {metric key: value}
    ks: list[int] = field(default_factory=lambda: [5, 10, 20, 50])
    notes: list[str] = field(default_factory=list)
    curves_png: bytes | None = None  # training curves, when a trained model was evaluated
    history_items: str = "excluded"  # the split's setting: are history items candidates?

    def protocols(self) -> list[str]:
        found = {m.group("protocol") for d in self.metrics.values() for k in d if (m := _KEY.match(k))}
        return sorted(found, key=lambda p: (p == "full", p))

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "metrics": self.metrics, "ks": self.ks, "notes": self.notes,
                "history_items": self.history_items,
                "protocols": {p: describe_protocol(p, self.history_items) for p in self.protocols()}}

    @classmethod
    def from_json(cls, d: dict, curves_png: bytes | None = None) -> "EvaluationReport":
        return cls(dataset=d["dataset"], metrics=d["metrics"], ks=d["ks"], notes=d.get("notes", []),
                   curves_png=curves_png, history_items=d.get("history_items", "excluded"))

    def to_markdown(self) -> str:
        cols = [f"hr_at_{k}" for k in self.ks] + [f"ndcg_at_{k}" for k in self.ks] + ["mrr", "auc"]
        out = [f"# Evaluation on {self.dataset}", ""]
        for protocol in self.protocols():
            out += [f"## Protocol `{protocol}`: {describe_protocol(protocol, self.history_items)}", "",
                    "| target set | model | n | " + " | ".join(c.replace("_at_", "@") for c in cols) + " |",
                    "|---|---|---:|" + "---:|" * len(cols)]
            for model, d in self.metrics.items():
                splits = sorted({m.group("split") for k in d if (m := _KEY.match(k)) and m.group("protocol") == protocol})
                for s in splits:
                    vals = [d.get(f"{s}_{protocol}_{c}") for c in cols]
                    n = d.get(f"{s}_{protocol}_n", d.get(f"{s}_n", ""))
                    cells = ["" if v is None else f"{v:.4f}" for v in vals]
                    out.append(f"| {s} | {model} | {int(n) if n != '' else ''} | " + " | ".join(cells) + " |")
            out.append("")
        out += [f"- {n}" for n in self.notes]
        return "\n".join(out)


def describe_protocol(protocol: str, history_items: str = "excluded") -> str:
    words = HISTORY_TEXT.get(history_items, HISTORY_TEXT["excluded"])
    if protocol.startswith("sampled"):
        return PROTOCOL_TEXT["sampled"].format(n=protocol.removeprefix("sampled"), pool=words["pool"])
    if protocol == "full":
        return PROTOCOL_TEXT["full"].format(history=words["history"])
    return protocol
