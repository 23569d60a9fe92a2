"""Deliberately broken manifests: each is rejected by the validation, with a reason that names the fault.

Every case starts from the rendered canary overlay (which passes everything), breaks one thing, and runs
the full validation (core schemas, Istio CRDs with CEL, all consistency checks).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from meshcheck import consistency, core, crd
from meshcheck.render import Doc, one


def validate_all(docs: list[Doc], crds: dict[tuple[str, str], crd.CrdVersion]) -> list[str]:
    problems = [
        e for d in docs for e in (core.validate_core(d) if core.is_core(d) else crd.validate_custom_resource(d, crds))
    ]
    for fn in consistency.CHECKS.values():
        problems += fn(docs)
    return problems


def _vs(docs: list[Doc]) -> Doc:
    return one(docs, "VirtualService")


def _stable(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", "autoglm-server-stable")


def _container(docs: list[Doc]) -> Doc:
    c: Doc = _stable(docs)["spec"]["template"]["spec"]["containers"][0]
    return c


def _typo_in_virtualservice(docs: list[Doc]) -> None:
    route = _vs(docs)["spec"]["http"][1]
    route["retires"] = route.pop("retries")


def _typo_in_deployment(docs: list[Doc]) -> None:
    c = _container(docs)
    c["imagePullPolcy"] = c.pop("imagePullPolicy")


def _weight_110(docs: list[Doc]) -> None:
    _vs(docs)["spec"]["http"][1]["route"][1]["weight"] = 110


def _missing_subset(docs: list[Doc]) -> None:
    dr = one(docs, "DestinationRule")
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "canary"]


def _wrong_probe_service(docs: list[Doc]) -> None:
    _container(docs)["livenessProbe"]["grpc"]["service"] = "autoglm.v1.Generation"


def _wrong_readiness_path(docs: list[Doc]) -> None:
    _container(docs)["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _http_port_as_tcp(docs: list[Doc]) -> None:
    port = next(p for p in one(docs, "Service")["spec"]["ports"] if p["name"] == "http-openai")
    port["appProtocol"] = "tcp"


def _http_listen_on_loopback(docs: list[Doc]) -> None:
    env = next(e for e in _container(docs)["env"] if e["name"] == "AUTOGLM_HTTP_LISTEN")
    env["value"] = "127.0.0.1:8000"


def _completions_wrong_scope(docs: list[Doc]) -> None:
    rule = next(
        r
        for r in one(docs, "AuthorizationPolicy")["spec"]["rules"]
        if "/v1/chat/completions" in r["to"][0]["operation"].get("paths", [])
    )
    rule["when"][0]["values"] = ["models:read"]


def _models_rule_missing(docs: list[Doc]) -> None:
    spec = one(docs, "AuthorizationPolicy")["spec"]
    spec["rules"] = [r for r in spec["rules"] if "/v1/models" not in r["to"][0]["operation"].get("paths", [])]


def _network_policy_without_http(docs: list[Doc]) -> None:
    for rule in one(docs, "NetworkPolicy")["spec"]["ingress"]:
        rule["ports"] = [p for p in rule["ports"] if p["port"] != 8000]


def _no_session_affinity(docs: list[Doc]) -> None:
    one(docs, "DestinationRule")["spec"]["trafficPolicy"]["loadBalancer"] = {"simple": "LEAST_REQUEST"}


def _route_for_one_port(docs: list[Doc]) -> None:
    _vs(docs)["spec"]["http"][0]["match"][0]["port"] = 50051


def _retry_on_resource_exhausted(docs: list[Doc]) -> None:
    _vs(docs)["spec"]["http"][1]["retries"]["retryOn"] = "unavailable,503,resource-exhausted"


def _jwt_from_other_header(docs: list[Doc]) -> None:
    one(docs, "RequestAuthentication")["spec"]["jwtRules"][0]["fromHeaders"] = [{"name": "x-jwt"}]


def _wrong_probe_port(docs: list[Doc]) -> None:
    _container(docs)["livenessProbe"]["grpc"]["port"] = 8080


def _permissive_namespace(docs: list[Doc]) -> None:
    one(docs, "PeerAuthentication", "default")["spec"]["mtls"]["mode"] = "PERMISSIVE"


def _permissive_grpc_port(docs: list[Doc]) -> None:
    pa = one(docs, "PeerAuthentication", "autoglm-server-jwks")
    pa["spec"]["portLevelMtls"] = {"50051": {"mode": "PERMISSIVE"}}


def _port_exception_without_selector(docs: list[Doc]) -> None:
    del one(docs, "PeerAuthentication", "autoglm-server-jwks")["spec"]["selector"]


def _catch_all_first(docs: list[Doc]) -> None:
    vs = _vs(docs)
    vs["spec"]["http"].reverse()


def _service_port_as_tcp(docs: list[Doc]) -> None:
    port = one(docs, "Service")["spec"]["ports"][0]
    port["name"], port["appProtocol"] = "api", "tcp"


def _unknown_principal(docs: list[Doc]) -> None:
    rule = one(docs, "AuthorizationPolicy")["spec"]["rules"][0]
    rule["from"][0]["source"]["principals"] = ["cluster.local/ns/autoglm/sa/someone-else"]


def _wrong_scope(docs: list[Doc]) -> None:
    one(docs, "AuthorizationPolicy")["spec"]["rules"][0]["when"][0]["values"] = ["models:read"]


def _jwks_wrong_path(docs: list[Doc]) -> None:
    rule = one(docs, "RequestAuthentication")["spec"]["jwtRules"][0]
    rule["jwksUri"] = rule["jwksUri"].replace("/.well-known/jwks.json", "/jwks")


def _jwks_ftp(docs: list[Doc]) -> None:
    rule = one(docs, "RequestAuthentication")["spec"]["jwtRules"][0]
    rule["jwksUri"] = rule["jwksUri"].replace("http://", "ftp://")


def _short_grace(docs: list[Doc]) -> None:
    _stable(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _subset_selects_both(docs: list[Doc]) -> None:
    one(docs, "Deployment", "autoglm-server-canary")["spec"]["template"]["metadata"]["labels"]["version"] = "stable"


def _zero_timeout_duration(docs: list[Doc]) -> None:
    one(docs, "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]["interval"] = "0s"


def _model_cache_on_the_root(docs: list[Doc]) -> None:
    _container(docs)["env"].append({"name": "AUTOGLM_MODEL_CACHE_DIR", "value": "/models"})


def _cache_volume_not_mounted(docs: list[Doc]) -> None:
    c = _container(docs)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "cache"]


@dataclass(frozen=True)
class Case:
    name: str
    breaks: Callable[[list[Doc]], None]
    reason: str


CASES = [
    Case("typo'd field in a VirtualService", _typo_in_virtualservice, "'retires' was unexpected"),
    Case("typo'd field in a Deployment", _typo_in_deployment, "'imagePullPolcy' was unexpected"),
    Case("weight 110", _weight_110, "weight 110 is outside 0..100"),
    Case(
        "missing subset", _missing_subset, "subset 'canary' of autoglm-server.autoglm.svc.cluster.local is not declared"
    ),
    Case("wrong probe service", _wrong_probe_service, "asks for health service 'autoglm.v1.Generation'"),
    Case("wrong probe port", _wrong_probe_port, "livenessProbe probes port 8080"),
    Case("readiness on the wrong path", _wrong_readiness_path, "readinessProbe asks '/healthz'"),
    Case("HTTP port seen as TCP", _http_port_as_tcp, "port 'http-openai': set appProtocol: http"),
    Case("HTTP API on loopback only", _http_listen_on_loopback, "AUTOGLM_HTTP_LISTEN is '127.0.0.1:8000'"),
    Case("chat allowed with the wrong scope", _completions_wrong_scope, "/v1/chat/completions must require scope"),
    Case("no rule for /v1/models", _models_rule_missing, "no AuthorizationPolicy rule allows /v1/models"),
    Case("NetworkPolicy closes the HTTP port", _network_policy_without_http, "no ingress rule admits API port 8000"),
    Case("no session affinity", _no_session_affinity, "must be consistentHash on httpHeaderName 'x-autoglm-session'"),
    Case("a route for one port only", _route_for_one_port, "is limited to port(s) [50051]"),
    Case("retry on RESOURCE_EXHAUSTED", _retry_on_resource_exhausted, "retry only on '503,unavailable'"),
    Case("JWT read from another header", _jwt_from_other_header, "does not read `Authorization: Bearer <JWT>`"),
    Case("PERMISSIVE where STRICT is required", _permissive_namespace, "mtls.mode is PERMISSIVE; STRICT is required"),
    Case("PERMISSIVE on the gRPC port", _permissive_grpc_port, "port 50051 is PERMISSIVE"),
    Case(
        "port exception without a selector (CEL)", _port_exception_without_selector, "portLevelMtls requires selector"
    ),
    Case("catch-all route first", _catch_all_first, "matches everything, so ['force-canary'] never apply"),
    Case("Service port seen as TCP", _service_port_as_tcp, "Istio treats it as TCP"),
    Case("principal of no ServiceAccount", _unknown_principal, "is no ServiceAccount in the manifests"),
    Case("Generate allowed with the wrong scope", _wrong_scope, "must require scope 'generate'"),
    Case("jwksUri on the wrong path", _jwks_wrong_path, "is not the daemon's /.well-known/jwks.json"),
    Case("jwksUri with a non-HTTP scheme (CEL)", _jwks_ftp, "url(self).getScheme()"),
    Case("grace period shorter than preStop + drain", _short_grace, "must exceed preStop 5 s + drain 30 s"),
    Case("subset selecting two Deployments", _subset_selects_both, "selects 2 Deployments"),
    Case("zero duration (CEL)", _zero_timeout_duration, "duration(self) >= duration('1ms')"),
    Case("model cache on the read-only root", _model_cache_on_the_root, "AUTOGLM_MODEL_CACHE_DIR /models is on the"),
    Case(
        "image's cache dir not mounted",
        _cache_volume_not_mounted,
        "AUTOGLM_MODEL_CACHE_DIR /var/cache/autoglm/models is on the read-only root",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_manifest_is_rejected(
    rendered: dict[str, list[Doc]], istio_crds: dict[tuple[str, str], crd.CrdVersion], case: Case
) -> None:
    docs = copy.deepcopy(rendered["canary"])
    case.breaks(docs)
    problems = validate_all(docs, istio_crds)
    assert any(case.reason in p for p in problems), f"{case.name}: not rejected for the right reason: {problems}"


def test_the_unbroken_overlay_passes(
    rendered: dict[str, list[Doc]], istio_crds: dict[tuple[str, str], crd.CrdVersion]
) -> None:
    assert validate_all(copy.deepcopy(rendered["canary"]), istio_crds) == []
