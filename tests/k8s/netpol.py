"""NetworkPolicy semantics (networking.k8s.io/v1) for the offline tests: label selectors, peers, ports, and whether
one pod may open a connection to another under a set of policies.

A connection from pod A to pod B on a port passes when both sides allow it (policies are additive allow-lists):
- egress: no policy with policyType Egress selects A, or some egress rule of one that does matches B and the port;
- ingress: no policy with policyType Ingress selects B, or some ingress rule of one that does matches A and the port.
An ``ipBlock`` peer is taken to match every address, pods included (CNIs differ on whether pod IPs fall under an
ipBlock; assuming they do can only make a "denied" assertion harder to pass). Ports are numbers here (the manifests
use numbers); a named port in a policy raises, so a change to names is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NAMESPACE = "mbprompt"


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict
    namespace: str = NAMESPACE
    namespace_labels: dict = field(default_factory=dict)

    def ns_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector; an empty (or absent) selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            raise ValueError(f"unknown selector operator {op!r} in {selector}")
    return True


def is_empty_selector(selector: dict | None) -> bool:
    return not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions")


def policy_types(policy: dict) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def selects(policy: dict, pod: Pod) -> bool:
    return policy["metadata"].get("namespace", NAMESPACE) == pod.namespace and selector_matches(
        policy["spec"].get("podSelector"), pod.labels)


def peer_matches(peer: dict, pod: Pod, policy_namespace: str = NAMESPACE) -> bool:
    if "ipBlock" in peer:
        return True
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], pod.ns_labels()):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), pod.labels)


def port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if not isinstance(p["port"], int):
            raise ValueError(f"named port {p['port']!r}: the tests resolve numeric ports only")
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _side_allows(policies: list[dict], subject: Pod, other: Pod, port: int, protocol: str, direction: str) -> bool:
    kind, rules_key, peers_key = {"egress": ("Egress", "egress", "to"), "ingress": ("Ingress", "ingress", "from")}[
        direction]
    selecting = [p for p in policies if kind in policy_types(p) and selects(p, subject)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            ns = policy["metadata"].get("namespace", NAMESPACE)
            if (not peers or any(peer_matches(peer, other, ns) for peer in peers)) and port_matches(
                    rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies: list[dict], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    return (_side_allows(policies, src, dst, port, protocol, "egress")
            and _side_allows(policies, dst, src, port, protocol, "ingress"))
