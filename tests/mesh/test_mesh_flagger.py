"""The Flagger example: renders, has the structure Flagger reads (no CRD schema is available here, so a
small JSON schema stands in), and its analysis queries use the daemon's real metric names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from meshcheck import consistency, render

CANARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "flagger.app/v1beta1"},
        "spec": {
            "type": "object",
            "required": ["targetRef", "service", "analysis"],
            "additionalProperties": False,
            "properties": {
                "targetRef": {"type": "object", "required": ["apiVersion", "kind", "name"]},
                "autoscalerRef": {"type": "object", "required": ["apiVersion", "kind", "name"]},
                "progressDeadlineSeconds": {"type": "integer", "minimum": 1},
                "service": {"type": "object", "required": ["port"]},
                "analysis": {
                    "type": "object",
                    "required": ["interval", "threshold", "metrics"],
                    "properties": {
                        "stepWeight": {"type": "integer", "minimum": 1, "maximum": 100},
                        "maxWeight": {"type": "integer", "minimum": 1, "maximum": 100},
                        "metrics": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "object", "required": ["name", "thresholdRange"]},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def flagger_docs(kubectl: str, mesh_dir: Path) -> list[render.Doc]:
    return render.parse(render.kustomize(kubectl, mesh_dir / "progressive" / "flagger"))


def test_canary_structure(flagger_docs: list[render.Doc]) -> None:
    canary = render.one(flagger_docs, "Canary")
    jsonschema.validate(canary, CANARY_SCHEMA)
    targets = {d["metadata"]["name"] for d in render.of_kind(flagger_docs, "Deployment")}
    assert canary["spec"]["targetRef"]["name"] in targets
    assert canary["spec"]["service"]["appProtocol"] == "grpc"


def test_analysis_uses_grpc_status_and_ttft(flagger_docs: list[render.Doc]) -> None:
    templates = {t["metadata"]["name"]: t["spec"]["query"] for t in render.of_kind(flagger_docs, "MetricTemplate")}
    canary = render.one(flagger_docs, "Canary")
    used = {m["templateRef"]["name"] for m in canary["spec"]["analysis"]["metrics"]}
    assert used == set(templates)
    queries = " ".join(templates.values())
    assert "autoglm_requests_total" in queries
    assert "code=~" in queries
    assert "autoglm_time_to_first_token_seconds_bucket" in queries
    assert "request-success-rate" not in queries


def test_flagger_example_keeps_route_timeout(flagger_docs: list[render.Doc]) -> None:
    svc = render.one(flagger_docs, "Canary")["spec"]["service"]
    vs_like = {"kind": "VirtualService", "metadata": {"name": "flagger", "namespace": "autoglm"}}
    vs_like["spec"] = {"http": [{"name": "generated", "timeout": svc["timeout"], "retries": svc["retries"]}]}
    assert consistency.route_timeout_outlives_generation([vs_like]) == []


def test_hpa_metric_has_an_adapter_rule(mesh_dir: Path, kubectl: str) -> None:
    rules = render.parse((mesh_dir / "monitoring" / "prometheus-adapter-rules.yaml").read_text())[0]
    exposed = {r["name"]["as"] for r in rules["rules"]["custom"]}
    docs = render.parse(render.kustomize(kubectl, mesh_dir / "overlays" / "single"))
    hpa = render.one(docs, "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted
    assert wanted <= exposed


def test_flagger_example_keeps_session_affinity_and_the_http_port(flagger_docs: list[render.Doc]) -> None:
    svc = render.one(flagger_docs, "Canary")["spec"]["service"]
    dr_like = {"kind": "DestinationRule", "metadata": {"name": "flagger", "namespace": "autoglm"}}
    dr_like["spec"] = {"trafficPolicy": svc["trafficPolicy"]}
    assert consistency.CHECKS["session_affinity_on_session_header"]([dr_like]) == []
    # Without port discovery Flagger's Services would carry the gRPC port only.
    assert svc["portDiscovery"] is True
