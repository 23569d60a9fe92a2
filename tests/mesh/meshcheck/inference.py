"""Consistency of the inference-gateway pieces: what the API server cannot check across resources.

The InferencePool must select the daemon's pods and name a port their container serves (otherwise the
router scores nothing, or scrapes and sends to a closed port); the route, the router Service and the
objectives must name what exists; autoscaling must have one owner per Deployment; only the router's
and Prometheus's identities may read /metrics on the pool's port.
"""

from __future__ import annotations

from .k8s import containers, pod_template, selects
from .render import Doc, of_kind, one

ROUTER_PRINCIPAL = "cluster.local/ns/autoglm/sa/autoglm-router"
PROMETHEUS_PRINCIPAL = "cluster.local/ns/monitoring/sa/prometheus"


def pool_errors(docs: list[Doc]) -> list[str]:
    pool = one(docs, "InferencePool")
    selector = pool["spec"]["selector"]["matchLabels"]
    ports = [p["number"] for p in pool["spec"]["targetPorts"]]
    selected = [d for d in of_kind(docs, "Deployment") if selects(selector, pod_template(d)["metadata"]["labels"])]
    if not selected:
        return [f"InferencePool {pool['metadata']['name']}: selector {selector} selects no Deployment's pods"]
    errors = []
    for deployment in selected:
        served = {p["containerPort"] for c in containers(deployment) for p in c.get("ports", [])}
        errors += [
            f"InferencePool targetPort {port}: Deployment {deployment['metadata']['name']} serves no such port"
            for port in ports
            if port not in served
        ]
    return errors


def reference_errors(docs: list[Doc]) -> list[str]:
    pool = one(docs, "InferencePool")
    name = pool["metadata"]["name"]
    errors = []
    picker = pool["spec"]["endpointPickerRef"]
    service = one(docs, "Service", picker["name"])
    if picker["port"]["number"] not in {p["port"] for p in service["spec"]["ports"]}:
        errors.append(f"endpointPickerRef port {picker['port']['number']} is not a port of Service {picker['name']}")
    if not list(
        d
        for d in of_kind(docs, "Deployment")
        if selects(service["spec"]["selector"], pod_template(d)["metadata"]["labels"])
    ):
        errors.append(f"Service {picker['name']} selects no router pods")
    for route in of_kind(docs, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                if ref.get("kind") == "InferencePool" and ref["name"] != name:
                    errors.append(f"HTTPRoute {route['metadata']['name']}: no InferencePool {ref['name']}")
    for objective in of_kind(docs, "InferenceObjective"):
        if objective["spec"]["poolRef"]["name"] != name:
            errors.append(f"InferenceObjective {objective['metadata']['name']}: poolRef is not {name}")
    return errors


def autoscaling_errors(docs: list[Doc]) -> list[str]:
    owners: dict[str, list[str]] = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for scaler in of_kind(docs, kind):
            owners.setdefault(scaler["spec"]["scaleTargetRef"]["name"], []).append(
                f"{kind}/{scaler['metadata']['name']}"
            )
    errors = [
        f"Deployment {target} has several autoscalers: {found}" for target, found in owners.items() if len(found) > 1
    ]
    for scaled in of_kind(docs, "ScaledObject"):
        queries = " ".join(t["metadata"].get("query", "") for t in scaled["spec"]["triggers"])
        if "cpu" in {t["type"] for t in scaled["spec"]["triggers"]}:
            errors.append(f"ScaledObject {scaled['metadata']['name']} scales on CPU")
        for gauge in ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
            if gauge not in queries:
                errors.append(f"ScaledObject {scaled['metadata']['name']}: no trigger on {gauge}")
    return errors


def metrics_reader_errors(docs: list[Doc]) -> list[str]:
    """Every ALLOW rule on the daemon that opens /metrics on the pool's port names only the two readers."""
    pool = one(docs, "InferencePool")
    ports = {str(p["number"]) for p in pool["spec"]["targetPorts"]}
    errors = []
    found = False
    for policy in of_kind(docs, "AuthorizationPolicy"):
        if policy["spec"].get("selector", {}).get("matchLabels", {}).get("app") != "autoglm-server":
            continue
        for rule in policy["spec"].get("rules", []):
            for to in rule.get("to", []):
                op = to["operation"]
                if "/metrics" not in op.get("paths", []) or not ports & set(op.get("ports", [])):
                    continue
                found = True
                principals = {p for f in rule.get("from", []) for p in f["source"].get("principals", [])}
                if not principals or principals - {ROUTER_PRINCIPAL, PROMETHEUS_PRINCIPAL}:
                    errors.append(
                        f"AuthorizationPolicy {policy['metadata']['name']} opens /metrics to {principals or 'anyone'}"
                    )
    if not found:
        errors.append("no AuthorizationPolicy lets the router read /metrics on the pool's port")
    return errors


def all_errors(docs: list[Doc]) -> list[str]:
    return pool_errors(docs) + reference_errors(docs) + autoscaling_errors(docs) + metrics_reader_errors(docs)
