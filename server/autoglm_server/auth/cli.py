"""`autoglm-server token mint ...` and `autoglm-server vault bootstrap ...`.

Both talk to Vault with the same connection settings as the daemon (flags, AUTOGLM_VAULT_* and
Vault's own VAULT_* variables). `token mint` prints the token alone on stdout so that
`TOKEN=$(autoglm-server token mint ...)` works; everything else goes to stderr.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import requests
from hvac import exceptions as hvac_exc
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from autoglm_server import names
from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.durations import parse_duration
from autoglm_server.auth.mint import MintRequest, mint_token
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultError, VaultSession

logger = logging.getLogger(__name__)


def _config(prog: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix="AUTOGLM_",
        cli_kebab_case=True,
        cli_prog_name=prog,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        cli_exit_on_error=False,
        extra="ignore",
    )


class MintSettings(VaultSettings, BaseSettings):
    """Sign a JWT through Vault transit; the private key never leaves Vault."""

    model_config = _config("autoglm-server token mint")

    sub: str = Field(..., min_length=1, description="subject (the caller's name)")
    scope: str = Field(names.SCOPE_GENERATE, description="space-separated scopes, e.g. 'generate models:read'")
    ttl: str = Field("15m", description="lifetime of the token, e.g. 15m, 1h")
    aud: list[str] = Field(default_factory=lambda: ["autoglm"], description="audience (repeatable)")
    iss: str = Field("autoglm-serve", description="issuer; must match the daemon's --jwt-issuer")
    tenant: str = Field("", description="tenant claim (default: none, the daemon then uses the subject)")
    min_key_age: str = Field("30m", description="sign with the newest key version at least this old")


class BootstrapSettings(VaultSettings, BaseSettings):
    """Set Vault up for autoglm-serve: transit key, policies, AppRole and Kubernetes roles."""

    model_config = _config("autoglm-server vault bootstrap")

    auto_rotate_period: str = Field("168h", description="Vault rotates the JWT key this often (at least 1h)")
    token_ttl: str = Field("1h", description="TTL of the Vault tokens the AppRole/Kubernetes roles issue")
    kubernetes_host: str = Field("", description="Kubernetes API URL to configure the Kubernetes auth method")
    kubernetes_ca_cert_file: str = Field("", description="PEM CA of the Kubernetes API (with --kubernetes-host)")
    service_account: str = Field("autoglm", description="service account of the daemon's pods")
    service_account_namespace: str = Field("autoglm", description="namespace of the daemon's pods")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")


def token_main(argv: list[str]) -> int:
    """`autoglm-server token mint ...`; returns the exit status."""
    _setup_logging()
    if not argv or argv[0] != "mint":
        print("usage: autoglm-server token mint --sub NAME [--scope S] [--ttl 15m] ...", file=sys.stderr)
        return 2
    try:
        settings = CliApp.run(MintSettings, cli_args=argv[1:])
        request = MintRequest(
            subject=settings.sub,
            scopes=settings.scope.split(),
            ttl_s=parse_duration(settings.ttl),
            issuer=settings.iss,
            audience=settings.aud,
            tenant=settings.tenant,
            min_key_age_s=parse_duration(settings.min_key_age),
        )
        session = VaultSession(settings)
        token = mint_token(session, settings.vault_transit_mount, settings.vault_transit_key, request)
    except (ValidationError, ValueError, OSError, VaultError, hvac_exc.VaultError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


def vault_main(argv: list[str]) -> int:
    """`autoglm-server vault bootstrap ...`; returns the exit status."""
    _setup_logging()
    if not argv or argv[0] != "bootstrap":
        print("usage: autoglm-server vault bootstrap [--vault-addr URL] ...", file=sys.stderr)
        return 2
    try:
        settings = CliApp.run(BootstrapSettings, cli_args=argv[1:])
        rotate_s = int(parse_duration(settings.auto_rotate_period))
        if rotate_s < 3600:
            raise ValueError("--auto-rotate-period must be at least 1h (Vault's minimum)")
        ca = Path(settings.kubernetes_ca_cert_file).read_text() if settings.kubernetes_ca_cert_file else ""
        plan = BootstrapPlan(
            transit_mount=settings.vault_transit_mount,
            transit_key=settings.vault_transit_key,
            auto_rotate_period_s=rotate_s,
            approle_mount=settings.vault_approle_mount,
            kubernetes_mount=settings.vault_kubernetes_mount,
            kubernetes_host=settings.kubernetes_host,
            kubernetes_ca_cert=ca,
            service_account=settings.service_account,
            service_account_namespace=settings.service_account_namespace,
            token_ttl_s=int(parse_duration(settings.token_ttl)),
        )
        steps = bootstrap(VaultSession(settings), plan)
    except (ValidationError, ValueError, OSError, VaultError, hvac_exc.VaultError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for step, outcome in steps:
        print(f"{outcome:>9}  {step}", file=sys.stderr)
    return 0
