"""`autoglm-server vault bootstrap`: set Vault up for autoglm-serve. Idempotent.

Each step reads first and writes only what differs, and reports created / updated / unchanged,
so running it twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvac import exceptions as hvac_exc

from autoglm_server.auth.policies import DAEMON_POLICY, ISSUER_POLICY, render_policies
from autoglm_server.auth.vault import VaultSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BootstrapPlan:
    transit_mount: str
    transit_key: str
    auto_rotate_period_s: int
    approle_mount: str
    kubernetes_mount: str
    kubernetes_host: str
    kubernetes_ca_cert: str  # PEM text; empty: Vault reads the pod's own CA (when it runs in-cluster)
    service_account: str
    service_account_namespace: str
    token_ttl_s: int


def _enable(client: Any, kind: str, path: str, *, auth: bool) -> str:
    if auth:
        mounted = client.sys.list_auth_methods()["data"]
        if f"{path}/" in mounted:
            return "unchanged"
        client.sys.enable_auth_method(method_type=kind, path=path)
        return "created"
    mounted = client.sys.list_mounted_secrets_engines()["data"]
    if f"{path}/" in mounted:
        return "unchanged"
    client.sys.enable_secrets_engine(backend_type=kind, path=path)
    return "created"


def _transit_key(client: Any, plan: BootstrapPlan) -> str:
    transit = client.secrets.transit
    try:
        data = transit.read_key(name=plan.transit_key, mount_point=plan.transit_mount)["data"]
    except hvac_exc.InvalidPath:
        transit.create_key(
            name=plan.transit_key,
            key_type="ecdsa-p256",
            mount_point=plan.transit_mount,
            auto_rotate_period=f"{plan.auto_rotate_period_s}s",
        )
        return "created"
    if data.get("type") != "ecdsa-p256":
        raise ValueError(f"transit key {plan.transit_key} exists with type {data.get('type')}, not ecdsa-p256")
    if int(data.get("auto_rotate_period") or 0) == plan.auto_rotate_period_s:
        return "unchanged"
    transit.update_key_configuration(
        name=plan.transit_key, mount_point=plan.transit_mount, auto_rotate_period=f"{plan.auto_rotate_period_s}s"
    )
    return "updated"


def _policy(client: Any, name: str, text: str) -> str:
    try:
        current = client.sys.read_policy(name=name)["data"]["rules"]
    except hvac_exc.InvalidPath:
        current = None
    if current == text:
        return "unchanged"
    client.sys.create_or_update_policy(name=name, policy=text)
    return "created" if current is None else "updated"


def _role(client: Any, path: str, wanted: dict[str, Any]) -> str:
    """Write auth role `path` unless every wanted field already has the wanted value."""
    try:
        current = client.read(path)
    except hvac_exc.InvalidPath:
        current = None
    data = (current or {}).get("data") or {}
    if current is not None and all(data.get(k) == v for k, v in wanted.items()):
        return "unchanged"
    client.write_data(path, data=wanted)
    return "created" if current is None else "updated"


Step = Callable[[str, str], None]  # records (step, outcome)


def _ignore(step: str, outcome: str) -> None:
    pass


def _role_token(plan: BootstrapPlan) -> dict[str, Any]:
    """The token settings every role issues with."""
    return {"token_ttl": plan.token_ttl_s, "token_max_ttl": plan.token_ttl_s * 4}


def _signing(client: Any, plan: BootstrapPlan, step: Step) -> None:
    """The transit engine, the JWT key and the three policies."""
    step(f"secrets engine {plan.transit_mount}/", _enable(client, "transit", plan.transit_mount, auth=False))
    step(f"transit key {plan.transit_key}", _transit_key(client, plan))
    for name, text in render_policies(plan.transit_mount, plan.transit_key).items():
        step(f"policy {name}", _policy(client, name, text))


def _approle(client: Any, plan: BootstrapPlan, step: Step) -> None:
    """AppRole logins for a daemon and an issuer outside Kubernetes."""
    step(f"auth {plan.approle_mount}/", _enable(client, "approle", plan.approle_mount, auth=True))
    for role, policy in (("autoglm-daemon", DAEMON_POLICY), ("autoglm-issuer", ISSUER_POLICY)):
        path = f"auth/{plan.approle_mount}/role/{role}"
        step(f"approle role {role}", _role(client, path, {"token_policies": [policy], **_role_token(plan)}))


def _kubernetes(client: Any, plan: BootstrapPlan, step: Step) -> None:
    """The Kubernetes login of the daemon's pods (their service account, audience "vault")."""
    mount = plan.kubernetes_mount
    step(f"auth {mount}/", _enable(client, "kubernetes", mount, auth=True))
    if plan.kubernetes_host:
        config = {"kubernetes_host": plan.kubernetes_host}
        if plan.kubernetes_ca_cert:
            config["kubernetes_ca_cert"] = plan.kubernetes_ca_cert
        step("kubernetes config", _role(client, f"auth/{mount}/config", config))
    k8s_role = {
        "bound_service_account_names": [plan.service_account],
        "bound_service_account_namespaces": [plan.service_account_namespace],
        "audience": "vault",
        "token_policies": [DAEMON_POLICY],
        **_role_token(plan),
    }
    step("kubernetes role autoglm-daemon", _role(client, f"auth/{mount}/role/autoglm-daemon", k8s_role))


def bootstrap(session: VaultSession, plan: BootstrapPlan, report: Step = _ignore) -> list[tuple[str, str]]:
    """Apply the plan; returns (step, outcome) pairs, and passes each to `report` as it is done."""

    def run(client: Any) -> list[tuple[str, str]]:
        steps: list[tuple[str, str]] = []

        def step(name: str, outcome: str) -> None:
            steps.append((name, outcome))
            report(name, outcome)

        _signing(client, plan, step)
        _approle(client, plan, step)
        _kubernetes(client, plan, step)
        return steps

    result: list[tuple[str, str]] = session.call(run)
    return result
