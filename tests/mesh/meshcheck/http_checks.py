"""Checks for the second front door (the OpenAI-compatible HTTP port) and for session affinity.

The same rules as for the gRPC port, read from autoglm_server.names: the Service port is seen as HTTP by
Istio and reaches the daemon's HTTP port, every API path of both ports is allowed (with its scope and a
JWT) and nothing else is, the JWT is read from the Authorization header, the NetworkPolicy lets both ports
in, one set of routes serves both ports, and the DestinationRule hashes on the session header.
"""

from __future__ import annotations

from autoglm_client.v1 import generation_pb2
from autoglm_server import names

from . import k8s
from .consistency import check
from .render import Doc, ident, of_kind

# Each HTTP API path: (method, scope). /health is open, like grpc.health.v1.
HTTP_API = {
    names.OPENAI_CHAT_COMPLETIONS_PATH: ("POST", names.SCOPE_GENERATE),
    names.OPENAI_COMPLETIONS_PATH: ("POST", names.SCOPE_GENERATE),
    names.OPENAI_MODELS_PATH: ("GET", names.SCOPE_MODELS_READ),
}
_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"]
GRPC_API = {
    f"/{_SERVICE.full_name}/Generate": names.SCOPE_GENERATE,
    f"/{_SERVICE.full_name}/Tokenize": names.SCOPE_GENERATE,
    f"/{_SERVICE.full_name}/GetModelInfo": names.SCOPE_MODELS_READ,
}
SCOPE_KEY = "request.auth.claims[scope]"


@check
def service_targets_http_port(docs: list[Doc]) -> list[str]:
    """The Service has the `http-openai` port, seen by Istio as HTTP, reaching the daemon's HTTP port,
    and the daemon in every pod listens there on all interfaces (the sidecar forwards to the pod IP)."""
    problems = []
    for service in of_kind(docs, "Service"):
        ports = [p for p in service["spec"]["ports"] if p.get("name") == names.HTTP_PORT_NAME]
        if len(ports) != 1:
            problems.append(f"{ident(service)}: expected one port named {names.HTTP_PORT_NAME!r}, found {len(ports)}")
            continue
        port = ports[0]
        if not k8s.is_http_port(port) or port.get("appProtocol") != "http":
            problems.append(
                f"{ident(service)} port {port['name']!r}: set appProtocol: http, or Istio treats it as TCP and "
                "ignores routes, retries, JWT paths and the session hash"
            )
        for dep in k8s.deployments_selected(docs, service["spec"]["selector"], service["metadata"]["namespace"]):
            c = k8s.containers(dep)[0]
            target = k8s.container_port(c, port.get("targetPort", port["port"]))
            if target != names.DEFAULT_HTTP_PORT:
                problems.append(
                    f"{ident(service)} port {port['name']!r} reaches port {target} in {ident(dep)}; "
                    f"the daemon serves HTTP on {names.DEFAULT_HTTP_PORT}"
                )
            listen = k8s.env_value(c, "AUTOGLM_HTTP_LISTEN")
            if listen != f"0.0.0.0:{names.DEFAULT_HTTP_PORT}":
                problems.append(
                    f"{ident(dep)}: AUTOGLM_HTTP_LISTEN is {listen!r}; it must be 0.0.0.0:{names.DEFAULT_HTTP_PORT} "
                    f"(the default {names.DEFAULT_HTTP_LISTEN} is unreachable from the sidecar)"
                )
    return problems


def _rule_problems(ap: Doc, i: int, rule: Doc) -> list[str]:
    """Problems of one ALLOW rule's HTTP paths: known path, its method, port and scope, and a JWT."""
    problems = []
    scopes = {v for w in rule.get("when", []) if w["key"] == SCOPE_KEY for v in w["values"]}
    has_jwt = bool(rule.get("from")) and all(f["source"].get("requestPrincipals") for f in rule["from"])
    for op in (t["operation"] for t in rule.get("to", [])):
        for path in op.get("paths", []):
            if path.startswith("/autoglm.") or path.startswith(names.HEALTH_SERVICE_PREFIX) or path == names.JWKS_PATH:
                continue  # gRPC paths: checked by authorization_principals_exist; the JWKS: admin port
            where = f"{ident(ap)} rule {i}: {path}"
            if op.get("ports") != [str(names.DEFAULT_HTTP_PORT)]:
                problems.append(f"{where} must be limited to the HTTP port {names.DEFAULT_HTTP_PORT}")
            if path == names.HTTP_HEALTH_PATH:
                continue
            if path not in HTTP_API:
                problems.append(f"{where} is not an HTTP path the daemon serves ({sorted(HTTP_API)})")
                continue
            method, scope = HTTP_API[path]
            if op.get("methods") != [method]:
                problems.append(f"{where} must allow only {method}, not {op.get('methods')}")
            if scopes != {scope}:
                problems.append(f"{where} must require scope {scope!r}, not {sorted(scopes)}")
            if not has_jwt:
                problems.append(f"{where} must require a valid JWT (requestPrincipals)")
    return problems


def _allowed(docs: list[Doc]) -> dict[str, set[str]]:
    """API path -> the scopes of the JWT-bearing ALLOW rules that let it through."""
    allowed: dict[str, set[str]] = {}
    for ap in of_kind(docs, "AuthorizationPolicy"):
        for rule in ap["spec"].get("rules", []):
            if not rule.get("from") or not all(f["source"].get("requestPrincipals") for f in rule["from"]):
                continue
            scopes = {v for w in rule.get("when", []) if w["key"] == SCOPE_KEY for v in w["values"]}
            for op in (t["operation"] for t in rule.get("to", [])):
                for path in op.get("paths", []):
                    allowed.setdefault(path, set()).update(scopes)
    return allowed


@check
def every_api_path_is_authorized(docs: list[Doc]) -> list[str]:
    """On both ports each API path has an ALLOW rule with a JWT and its scope (else the sidecar answers
    403 to every caller), and each HTTP rule is limited to its port, method and scope."""
    problems = []
    for ap in of_kind(docs, "AuthorizationPolicy"):
        for i, rule in enumerate(ap["spec"].get("rules", [])):
            problems += _rule_problems(ap, i, rule)
    allowed = _allowed(docs)
    wanted = {**GRPC_API, **{path: scope for path, (_, scope) in HTTP_API.items()}}
    for path, scope in sorted(wanted.items()):
        if scope not in allowed.get(path, set()):
            problems.append(f"no AuthorizationPolicy rule allows {path} with a JWT and scope {scope!r}")
    return problems


@check
def jwt_read_from_authorization_header(docs: list[Doc]) -> list[str]:
    """Both ports send `authorization: Bearer <JWT>`; a RequestAuthentication that reads another header
    would let the token through unvalidated (the AuthorizationPolicy then denies every call)."""
    problems = []
    for ra in of_kind(docs, "RequestAuthentication"):
        for rule in ra["spec"].get("jwtRules", []):
            headers = rule.get("fromHeaders", [{"name": "Authorization", "prefix": "Bearer "}])
            if not any(h["name"].lower() == "authorization" and h.get("prefix") == "Bearer " for h in headers):
                problems.append(f"{ident(ra)}: fromHeaders {headers} does not read `Authorization: Bearer <JWT>`")
            if rule.get("fromParams"):
                problems.append(f"{ident(ra)}: fromParams would accept tokens in URLs (they end up in logs)")
    return problems


@check
def network_policy_admits_api_ports(docs: list[Doc]) -> list[str]:
    """The NetworkPolicy of the daemon's pods lets callers reach both API ports."""
    problems = []
    for np in of_kind(docs, "NetworkPolicy"):
        open_ports = {p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
        for port in (names.DEFAULT_GRPC_PORT, names.DEFAULT_HTTP_PORT):
            if port not in open_ports:
                problems.append(f"{ident(np)}: no ingress rule admits API port {port}")
    return problems


@check
def routes_serve_both_ports(docs: list[Doc]) -> list[str]:
    """No route is limited to one port, so the canary weights and the header override are the same for
    gRPC and HTTP callers (two copies of the split could drift apart)."""
    problems = []
    for vs in of_kind(docs, "VirtualService"):
        for route in vs["spec"].get("http", []):
            ports = [m["port"] for m in route.get("match", []) if "port" in m]
            if ports:
                problems.append(f"{ident(vs)} route {route.get('name')!r} is limited to port(s) {ports}")
    return problems


@check
def session_affinity_on_session_header(docs: list[Doc]) -> list[str]:
    """Every DestinationRule (and subset) hashes on the session header, so one agent's steps reach the
    replica that holds its prefix cache."""
    problems = []
    for dr in of_kind(docs, "DestinationRule"):
        policies = [("trafficPolicy", dr["spec"].get("trafficPolicy", {}))]
        policies += [
            (f"subset {s['name']!r}", s["trafficPolicy"]) for s in dr["spec"].get("subsets", []) if "trafficPolicy" in s
        ]
        for where, policy in policies:
            lb = policy.get("loadBalancer")
            if lb is None and where != "trafficPolicy":
                continue  # a subset without its own balancer inherits the rule's
            header = (lb or {}).get("consistentHash", {}).get("httpHeaderName")
            if header != names.SESSION_HEADER:
                problems.append(
                    f"{ident(dr)} {where}: loadBalancer must be consistentHash on httpHeaderName "
                    f"{names.SESSION_HEADER!r} (found {lb})"
                )
    return problems
