"""Cross-resource checks: each function takes every rendered resource and returns the problems found.

The facts about the daemon (ports, health service names, JWKS path, drain timeout, scopes, RPC names)
come from autoglm_server.names and the compiled proto, never from a copy, so a manifest that drifts from
what the daemon really serves fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlparse

from autoglm_client.v1 import generation_pb2
from autoglm_server import names
from autoglm_server.engine.settings import EngineSettings

from . import k8s
from .render import Doc, ident, of_kind

Check = Callable[[list[Doc]], list[str]]
CHECKS: dict[str, Check] = {}

# The longest generation a route must outlive: the largest max_new_tokens a request may ask for, at the
# slowest decode rate we still serve (tokens per second). Both are documented in mesh/README.md.
MAX_NEW_TOKENS_LIMIT = int(EngineSettings.model_fields["max_new_tokens_limit"].default)
SLOWEST_TOKENS_PER_S = 10.0
# On a GPU (vLLM), the slowest decode rate of one stream in a full batch: a drain must let the longest
# generation finish at that rate. The CPU toy overlays make no such promise.
GPU_SLOWEST_TOKENS_PER_S = 20.0
# What a route may retry: calls the daemon did not admit (gRPC UNAVAILABLE on the gRPC port, HTTP 503 on
# the OpenAI port). Never RESOURCE_EXHAUSTED/429 (the pod is busy: a retry adds load) or auth failures.
SAFE_RETRY_ON = {"unavailable", "503"}


def max_new_tokens_limit(dep: Doc) -> int:
    """The longest generation a Deployment's daemon allows (its env, else the daemon's default)."""
    value = k8s.env_value(k8s.containers(dep)[0], "AUTOGLM_MAX_NEW_TOKENS_LIMIT")
    return int(value) if value is not None else MAX_NEW_TOKENS_LIMIT


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    raise ValueError(f"not a duration: {text!r}")


def _destination_rules(docs: list[Doc]) -> dict[str, Doc]:
    return {k8s.qualify(dr["spec"]["host"], dr["metadata"]["namespace"]): dr for dr in of_kind(docs, "DestinationRule")}


def _routes(vs: Doc) -> list[Doc]:
    routes: list[Doc] = vs["spec"].get("http", [])
    return routes


@check
def virtualservice_subsets_exist(docs: list[Doc]) -> list[str]:
    """Every subset a VirtualService routes to is declared by the DestinationRule of that host."""
    problems = []
    rules = _destination_rules(docs)
    for vs in of_kind(docs, "VirtualService"):
        for route in _routes(vs):
            for dest in route.get("route", []):
                host = k8s.qualify(dest["destination"]["host"], vs["metadata"]["namespace"])
                subset = dest["destination"].get("subset")
                if subset is None:
                    continue
                declared = {s["name"] for s in rules.get(host, {}).get("spec", {}).get("subsets", [])}
                if subset not in declared:
                    problems.append(
                        f"{ident(vs)} route {route.get('name')!r}: subset {subset!r} of {host} is not "
                        f"declared in any DestinationRule (declared: {sorted(declared)})"
                    )
    return problems


@check
def subsets_select_one_deployment(docs: list[Doc]) -> list[str]:
    """Each subset's labels pick out the pods of exactly one Deployment behind the host's Service."""
    problems = []
    services = k8s.services_by_fqdn(docs)
    for host, dr in _destination_rules(docs).items():
        service = services.get(host)
        if service is None:
            problems.append(f"{ident(dr)}: host {host} is no Service in the manifests")
            continue
        for subset in dr["spec"].get("subsets", []):
            labels = {**service["spec"]["selector"], **subset.get("labels", {})}
            chosen = [
                d["metadata"]["name"] for d in k8s.deployments_selected(docs, labels, service["metadata"]["namespace"])
            ]
            if len(chosen) != 1:
                problems.append(
                    f"{ident(dr)} subset {subset['name']!r} (labels {labels}) selects {len(chosen)} "
                    f"Deployments {chosen}; it must select exactly one"
                )
    return problems


@check
def weights_sum_to_100(docs: list[Doc]) -> list[str]:
    """Per route, weights are 0..100 and add up to 100 (Istio otherwise rejects or renormalises them)."""
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for route in _routes(vs):
            dests = route.get("route", [])
            weights = [d.get("weight", 100 if len(dests) == 1 else 0) for d in dests]
            bad = [w for w in weights if not 0 <= w <= 100]
            if bad:
                problems.append(f"{ident(vs)} route {route.get('name')!r}: weight {bad[0]} is outside 0..100")
            if sum(weights) != 100:
                problems.append(
                    f"{ident(vs)} route {route.get('name')!r}: weights {weights} sum to {sum(weights)}, not 100"
                )
    return problems


@check
def routes_take_effect(docs: list[Doc]) -> list[str]:
    """Catch a split that would be silently ignored: VirtualService not bound to the Service's host or to
    the mesh, a route shadowed by an earlier catch-all, a weighted split with no catch-all, or the
    Service port seen as TCP (Istio then applies no HTTP route at all)."""
    problems = []
    services = k8s.services_by_fqdn(docs)
    for vs in of_kind(docs, "VirtualService"):
        ns = vs["metadata"]["namespace"]
        hosts = [k8s.qualify(h, ns) for h in vs["spec"].get("hosts", [])]
        if not any(h in services for h in hosts):
            problems.append(f"{ident(vs)}: hosts {hosts} name no Service, so no caller's traffic uses it")
        gateways = vs["spec"].get("gateways", ["mesh"])
        if "mesh" not in gateways:
            problems.append(f"{ident(vs)}: gateways {gateways} leave out 'mesh', so sidecars ignore it")
        routes = _routes(vs)
        for i, route in enumerate(routes):
            if not route.get("match") and i != len(routes) - 1:
                later = [r.get("name") for r in routes[i + 1 :]]
                problems.append(f"{ident(vs)} route {route.get('name')!r} matches everything, so {later} never apply")
        if routes and routes[-1].get("match"):
            problems.append(f"{ident(vs)}: the last route has a match, so unmatched calls get no route (404)")
        for host in hosts:
            service = services.get(host)
            if service and not any(k8s.is_grpc_port(p) for p in service["spec"]["ports"]):
                problems.append(
                    f"{ident(service)}: no port is declared gRPC, so Istio treats it as TCP and ignores {ident(vs)}"
                )
    return problems


@check
def service_targets_grpc_port(docs: list[Doc]) -> list[str]:
    """The Service's gRPC port is named for gRPC and reaches the daemon's real gRPC port in every pod."""
    problems = []
    for service in of_kind(docs, "Service"):
        grpc_ports = [p for p in service["spec"]["ports"] if k8s.is_grpc_port(p)]
        if len(grpc_ports) != 1:
            problems.append(
                f"{ident(service)}: expected one gRPC port (name grpc-*, appProtocol grpc), found {len(grpc_ports)}"
            )
            continue
        port = grpc_ports[0]
        if not str(port.get("name", "")).startswith("grpc-") or port.get("appProtocol") != "grpc":
            problems.append(f"{ident(service)} port {port.get('name')!r}: name it grpc-* and set appProtocol: grpc")
        pods = list(k8s.deployments_selected(docs, service["spec"]["selector"], service["metadata"]["namespace"]))
        if not pods:
            problems.append(f"{ident(service)}: its selector matches no Deployment")
        for dep in pods:
            for c in k8s.containers(dep)[:1]:
                target = k8s.container_port(c, port.get("targetPort", port["port"]))
                if target != names.DEFAULT_GRPC_PORT:
                    problems.append(
                        f"{ident(service)} port {port.get('name')!r} reaches port {target} in {ident(dep)}; "
                        f"the daemon serves gRPC on {names.DEFAULT_GRPC_PORT}"
                    )
    return problems


def _readiness_problems(dep: Doc, container: Doc) -> list[str]:
    """Readiness is the HTTP API's /health on the daemon's HTTP port (it answers 503 until ready)."""
    probe = container.get("readinessProbe", {}).get("httpGet")
    if probe is None:
        return [f"{ident(dep)}: readinessProbe must be an httpGet of {names.HTTP_HEALTH_PATH}"]
    problems = []
    if k8s.container_port(container, probe.get("port", 0)) != names.DEFAULT_HTTP_PORT:
        problems.append(
            f"{ident(dep)}: readinessProbe probes port {probe.get('port')!r}, "
            f"the daemon serves HTTP on {names.DEFAULT_HTTP_PORT}"
        )
    if probe.get("path") != names.HTTP_HEALTH_PATH:
        problems.append(
            f"{ident(dep)}: readinessProbe asks {probe.get('path')!r}; the daemon reports readiness at "
            f"{names.HTTP_HEALTH_PATH}"
        )
    return problems


def _probe_problems(dep: Doc, container: Doc) -> list[str]:
    expected = {
        "startupProbe": names.LIVENESS_SERVICE,
        "livenessProbe": names.LIVENESS_SERVICE,
    }
    problems = _readiness_problems(dep, container)
    for probe_name, service in expected.items():
        probe = container.get(probe_name, {}).get("grpc")
        if probe is None:
            problems.append(f"{ident(dep)}: {probe_name} must be a native grpc probe")
            continue
        if probe.get("port") != names.DEFAULT_GRPC_PORT:
            problems.append(
                f"{ident(dep)}: {probe_name} probes port {probe.get('port')}, "
                f"the daemon serves {names.DEFAULT_GRPC_PORT}"
            )
        if probe.get("service", "") != service:
            problems.append(
                f"{ident(dep)}: {probe_name} asks for health service {probe.get('service', '')!r}; "
                f"the daemon reports it under {service!r}"
            )
    listen = k8s.env_value(container, "AUTOGLM_LISTEN")
    if listen is None or not listen.endswith(f":{names.DEFAULT_GRPC_PORT}"):
        problems.append(f"{ident(dep)}: AUTOGLM_LISTEN {listen!r} is not on port {names.DEFAULT_GRPC_PORT}")
    return problems


@check
def probes_match_daemon(docs: list[Doc]) -> list[str]:
    """Probes ask the health services the daemon really registers, on the port it really listens on."""
    problems = []
    for dep in of_kind(docs, "Deployment"):
        problems += _probe_problems(dep, k8s.containers(dep)[0])
    return problems


@check
def authorization_principals_exist(docs: list[Doc]) -> list[str]:
    """AuthorizationPolicy principals name ServiceAccounts that exist; JWT principals name the issuer
    RequestAuthentication trusts; paths are RPCs the proto defines, each guarded by its scope."""
    problems = []
    accounts = {
        f"cluster.local/ns/{sa['metadata']['namespace']}/sa/{sa['metadata']['name']}"
        for sa in of_kind(docs, "ServiceAccount")
    }
    issuers = {r["issuer"] for ra in of_kind(docs, "RequestAuthentication") for r in ra["spec"].get("jwtRules", [])}
    service = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"]
    rpcs = {f"/{service.full_name}/{m.name}" for m in service.methods}
    needs = {
        f"/{service.full_name}/Generate": names.SCOPE_GENERATE,
        f"/{service.full_name}/Tokenize": names.SCOPE_GENERATE,
        f"/{service.full_name}/GetModelInfo": names.SCOPE_MODELS_READ,
    }
    for ap in of_kind(docs, "AuthorizationPolicy"):
        for i, rule in enumerate(ap["spec"].get("rules", [])):
            for src in (f["source"] for f in rule.get("from", [])):
                for p in src.get("principals", []):
                    if p not in accounts:
                        problems.append(f"{ident(ap)} rule {i}: principal {p!r} is no ServiceAccount in the manifests")
                for rp in src.get("requestPrincipals", []):
                    if rp.rsplit("/", 1)[0] not in issuers:
                        problems.append(
                            f"{ident(ap)} rule {i}: requestPrincipal {rp!r} is from no trusted issuer {sorted(issuers)}"
                        )
            scopes = {v for w in rule.get("when", []) if w["key"] == "request.auth.claims[scope]" for v in w["values"]}
            for op in (t["operation"] for t in rule.get("to", [])):
                for path in op.get("paths", []):
                    if path.startswith(f"/{service.full_name}/"):
                        if path not in rpcs:
                            problems.append(f"{ident(ap)} rule {i}: {path} is not an RPC of {service.full_name}")
                        elif scopes != {needs[path]}:
                            problems.append(
                                f"{ident(ap)} rule {i}: {path} must require scope {needs[path]!r}, not {sorted(scopes)}"
                            )
                        elif not rule.get("from") or not all(
                            f["source"].get("requestPrincipals") for f in rule["from"]
                        ):
                            problems.append(
                                f"{ident(ap)} rule {i}: {path} must require a valid JWT (requestPrincipals)"
                            )
    return problems


@check
def jwks_uri_matches_daemon(docs: list[Doc]) -> list[str]:
    """RequestAuthentication's jwksUri reaches the daemon's admin port and JWKS path; issuer and
    audience are the ones the daemon is configured with."""
    problems = []
    services = k8s.services_by_fqdn(docs)
    deployments = list(of_kind(docs, "Deployment"))
    for ra in of_kind(docs, "RequestAuthentication"):
        for rule in ra["spec"].get("jwtRules", []):
            uri = urlparse(rule.get("jwksUri", ""))
            if uri.path != names.JWKS_PATH:
                problems.append(f"{ident(ra)}: jwksUri path {uri.path!r} is not the daemon's {names.JWKS_PATH}")
            service = services.get(uri.hostname or "")
            if service is None:
                problems.append(f"{ident(ra)}: jwksUri host {uri.hostname!r} is no Service in the manifests")
                continue
            port = next((p for p in service["spec"]["ports"] if p["port"] == uri.port), None)
            if port is None:
                problems.append(f"{ident(ra)}: jwksUri port {uri.port} is not a port of {ident(service)}")
                continue
            for dep in deployments:
                c = k8s.containers(dep)[0]
                if k8s.container_port(c, port.get("targetPort", port["port"])) != names.DEFAULT_ADMIN_PORT:
                    problems.append(
                        f"{ident(ra)}: jwksUri port {uri.port} does not reach admin port "
                        f"{names.DEFAULT_ADMIN_PORT} of {ident(dep)}"
                    )
                admin = k8s.env_value(c, "AUTOGLM_ADMIN_LISTEN") or ""
                if not admin.endswith(f":{names.DEFAULT_ADMIN_PORT}"):
                    problems.append(
                        f"{ident(dep)}: AUTOGLM_ADMIN_LISTEN {admin!r} is not on port {names.DEFAULT_ADMIN_PORT}"
                    )
                if k8s.env_value(c, "AUTOGLM_JWT_ISSUER") != rule["issuer"]:
                    problems.append(
                        f"{ident(dep)}: AUTOGLM_JWT_ISSUER differs from {ident(ra)}'s issuer {rule['issuer']!r}"
                    )
                if k8s.env_value(c, "AUTOGLM_JWT_AUDIENCE") not in rule.get("audiences", []):
                    problems.append(f"{ident(dep)}: AUTOGLM_JWT_AUDIENCE is not among {ident(ra)}'s audiences")
    return problems


@check
def grace_exceeds_prestop_and_drain(docs: list[Doc]) -> list[str]:
    """The pod is killed only after preStop and the daemon's drain, and the sidecar outlives both."""
    problems = []
    for dep in of_kind(docs, "Deployment"):
        spec = k8s.pod_template(dep)["spec"]
        c = k8s.containers(dep)[0]
        drain = float(k8s.env_value(c, "AUTOGLM_DRAIN_TIMEOUT") or names.DEFAULT_DRAIN_TIMEOUT_S)
        pre_stop = float(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        if grace <= pre_stop + drain:
            problems.append(
                f"{ident(dep)}: terminationGracePeriodSeconds {grace:g} must exceed "
                f"preStop {pre_stop:g} s + drain {drain:g} s"
            )
        proxy = json.loads(k8s.pod_template(dep)["metadata"].get("annotations", {}).get("proxy.istio.io/config", "{}"))
        sidecar = _duration_s(proxy.get("terminationDrainDuration", "5s"))
        if k8s.requests_gpu(c) and drain < max_new_tokens_limit(dep) / GPU_SLOWEST_TOKENS_PER_S:
            problems.append(
                f"{ident(dep)}: drain {drain:g} s cannot finish the longest generation "
                f"({max_new_tokens_limit(dep)} tokens at {GPU_SLOWEST_TOKENS_PER_S:g} tokens/s)"
            )
        if not pre_stop + drain <= sidecar < grace:
            problems.append(
                f"{ident(dep)}: the sidecar's terminationDrainDuration {sidecar:g} s must cover preStop + drain "
                f"({pre_stop + drain:g} s) and end before the grace period ({grace:g} s)"
            )
    return problems


@check
def mtls_is_strict(docs: list[Doc]) -> list[str]:
    """STRICT mTLS everywhere, except plaintext on the admin port where istiod fetches the JWKS; never on
    the gRPC port. Traffic to the daemon uses ISTIO_MUTUAL."""
    problems = []
    pas = list(of_kind(docs, "PeerAuthentication"))
    if not any("selector" not in pa["spec"] and pa["spec"].get("mtls", {}).get("mode") == "STRICT" for pa in pas):
        problems.append("no namespace-wide PeerAuthentication with mtls.mode STRICT")
    for pa in pas:
        mode = pa["spec"].get("mtls", {}).get("mode", "UNSET")
        if mode != "STRICT":
            problems.append(f"{ident(pa)}: mtls.mode is {mode}; STRICT is required")
        for port, setting in pa["spec"].get("portLevelMtls", {}).items():
            if setting.get("mode") != "STRICT" and int(port) != names.DEFAULT_ADMIN_PORT:
                problems.append(
                    f"{ident(pa)}: port {port} is {setting.get('mode')}; only the admin port "
                    f"{names.DEFAULT_ADMIN_PORT} (JWKS for istiod) may be PERMISSIVE"
                )
    for dr in of_kind(docs, "DestinationRule"):
        tls = dr["spec"].get("trafficPolicy", {}).get("tls", {}).get("mode")
        if tls != "ISTIO_MUTUAL":
            problems.append(f"{ident(dr)}: trafficPolicy.tls.mode is {tls}; ISTIO_MUTUAL is required")
    return problems


@check
def route_timeout_outlives_generation(docs: list[Doc]) -> list[str]:
    """Each route's timeout is longer than the longest generation, and retries cover UNAVAILABLE only."""
    longest = (
        max([MAX_NEW_TOKENS_LIMIT, *map(max_new_tokens_limit, of_kind(docs, "Deployment"))]) / SLOWEST_TOKENS_PER_S
    )
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for route in _routes(vs):
            timeout = _duration_s(route.get("timeout", "15s"))
            if timeout <= longest:
                problems.append(
                    f"{ident(vs)} route {route.get('name')!r}: timeout {timeout:g} s is shorter than "
                    f"the longest generation ({longest:g} s)"
                )
            retry_on = route.get("retries", {}).get("retryOn", "")
            if set(retry_on.split(",")) != SAFE_RETRY_ON:
                problems.append(
                    f"{ident(vs)} route {route.get('name')!r}: retryOn {retry_on!r}; retry only on "
                    f"{','.join(sorted(SAFE_RETRY_ON))!r} (gRPC UNAVAILABLE, HTTP 503: not admitted)"
                )
    return problems


@check
def autoscalers_and_budgets_target_workloads(docs: list[Doc]) -> list[str]:
    """Each HPA scales an existing Deployment; each PDB covers exactly one Deployment's pods."""
    problems = []
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(
                f"{ident(hpa)}: scales {hpa['spec']['scaleTargetRef']['name']}, which is not a Deployment here"
            )
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        chosen = list(
            k8s.deployments_selected(docs, pdb["spec"]["selector"]["matchLabels"], pdb["metadata"]["namespace"])
        )
        if len(chosen) != 1:
            problems.append(f"{ident(pdb)}: selects the pods of {len(chosen)} Deployments; it must select one")
    return problems


# The HTTP API and session-affinity checks, and those of the image's writable places, live in their own
# modules; importing them registers them in CHECKS.
from . import http_checks as _http_checks  # noqa: E402, F401
from . import image_checks as _image_checks  # noqa: E402, F401
