"""Small helpers that read Kubernetes objects the way the controllers do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .render import Doc, of_kind

CLUSTER_DOMAIN = "svc.cluster.local"


def pod_template(deployment: Doc) -> Doc:
    template: Doc = deployment["spec"]["template"]
    return template


def containers(deployment: Doc) -> list[Doc]:
    found: list[Doc] = pod_template(deployment)["spec"]["containers"]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector selects LABELS when every pair is present (an empty one selects all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def env_value(container: Doc, name: str) -> str | None:
    for var in container.get("env", []):
        if var["name"] == name:
            value = var.get("value")
            return None if value is None else str(value)
    return None


def container_port(container: Doc, port: int | str) -> int | None:
    """Resolve a Service targetPort (number or name) against a container's ports."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    return None


def service_fqdn(service: Doc) -> str:
    meta = service["metadata"]
    return f"{meta['name']}.{meta['namespace']}.{CLUSTER_DOMAIN}"


def qualify(host: str, namespace: str) -> str:
    """Istio's reading of a short host name: relative to the namespace of the rule that names it."""
    if "." not in host:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    if host.count(".") == 1:
        return f"{host}.{CLUSTER_DOMAIN}"
    return host


def services_by_fqdn(docs: list[Doc]) -> dict[str, Doc]:
    return {service_fqdn(s): s for s in of_kind(docs, "Service")}


def deployments_selected(docs: list[Doc], labels: dict[str, str], namespace: str) -> Iterator[Doc]:
    for d in of_kind(docs, "Deployment"):
        if d["metadata"].get("namespace") == namespace and selects(labels, pod_template(d)["metadata"]["labels"]):
            yield d


def is_grpc_port(port: dict[str, Any]) -> bool:
    """Istio's protocol selection: appProtocol first, then the port name's prefix."""
    if "appProtocol" in port:
        return str(port["appProtocol"]).lower() == "grpc"
    name = str(port.get("name", ""))
    return name == "grpc" or name.startswith("grpc-")


def is_http_port(port: dict[str, Any]) -> bool:
    """Istio's protocol selection for plain HTTP: appProtocol first, then the port name's prefix."""
    if "appProtocol" in port:
        return str(port["appProtocol"]).lower() in ("http", "http2")
    name = str(port.get("name", ""))
    return name in ("http", "http2") or name.startswith(("http-", "http2-"))


def requests_gpu(container: Doc) -> bool:
    return "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
