"""`autoglm-server token mint ...` and `autoglm-server vault bootstrap ...`.

Both talk to Vault with the same connection settings as the daemon (flags, AUTOGLM_VAULT_* and
Vault's own VAULT_* variables). `token mint` prints the token alone on stdout so that
`TOKEN=$(autoglm-server token mint ...)` works; everything else goes to stderr: progress as it
happens, and any failure as one `error: ...` line with exit status 1 (2 for usage errors), never a
traceback. Messages never contain the Vault token, a secret_id or the minted JWT.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
from hvac import exceptions as hvac_exc
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsError

from autoglm_server import names
from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.durations import parse_duration
from autoglm_server.auth.keys import KeyFormatError
from autoglm_server.auth.mint import MintRequest, mint_token
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultError, VaultSession, vault_message
from autoglm_server.command_settings import command_config

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A hint per command for Vault's 403: the usual cause is a token with the wrong policy.
_FORBIDDEN_HINT = {
    "token mint": "the token needs the autoglm-issuer policy",
    "vault bootstrap": "bootstrap needs an admin token (it mounts engines and writes policies)",
}


class MintSettings(VaultSettings, BaseSettings):
    """Sign a JWT through Vault transit; the private key never leaves Vault."""

    model_config = command_config("autoglm-server token mint")

    sub: str = Field(..., min_length=1, description="subject (the caller's name)")
    scope: str = Field(names.SCOPE_GENERATE, description="space-separated scopes, e.g. 'generate models:read'")
    ttl: str = Field("15m", description="lifetime of the token, e.g. 15m, 1h")
    aud: list[str] = Field(default_factory=lambda: ["autoglm"], description="audience (repeatable)")
    iss: str = Field("autoglm-serve", description="issuer; must match the daemon's --jwt-issuer")
    tenant: str = Field("", description="tenant claim (default: none, the daemon then uses the subject)")
    min_key_age: str = Field("30m", description="sign with the newest key version at least this old")


class BootstrapSettings(VaultSettings, BaseSettings):
    """Set Vault up for autoglm-serve: transit key, policies, AppRole and Kubernetes roles."""

    model_config = command_config("autoglm-server vault bootstrap")

    auto_rotate_period: str = Field("168h", description="Vault rotates the JWT key this often (at least 1h)")
    token_ttl: str = Field("1h", description="TTL of the Vault tokens the AppRole/Kubernetes roles issue")
    kubernetes_host: str = Field("", description="Kubernetes API URL to configure the Kubernetes auth method")
    kubernetes_ca_cert_file: str = Field("", description="PEM CA of the Kubernetes API (with --kubernetes-host)")
    service_account: str = Field("autoglm", description="service account of the daemon's pods")
    service_account_namespace: str = Field("autoglm", description="namespace of the daemon's pods")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")


def _validation_line(exc: ValidationError) -> str:
    """One line for pydantic's multi-line report: '--sub: Field required; --ttl: ...'."""
    parts = []
    for error in exc.errors():
        field = "--" + "-".join(str(part) for part in error["loc"]).replace("_", "-")
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


def _error_line(command: str, exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return _validation_line(exc)
    if isinstance(exc, hvac_exc.Forbidden):
        return f"Vault refused: {vault_message(exc)} ({_FORBIDDEN_HINT[command]})"
    if isinstance(exc, hvac_exc.VaultError):
        return f"Vault refused: {vault_message(exc)}"
    if isinstance(exc, OSError) and not isinstance(exc, requests.RequestException):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return str(exc)


def _run(command: str, fn: Callable[[], T]) -> tuple[T | None, int]:
    """(fn(), 0), or (None, exit status) after printing the failure as one line."""
    status = 1
    try:
        return fn(), 0
    except (ValidationError, SettingsError) as exc:
        status = 2  # a usage error: the command line is wrong, not Vault
        message = _error_line(command, exc)
    except (ValueError, OSError, VaultError, hvac_exc.VaultError, KeyFormatError) as exc:
        message = _error_line(command, exc)
    except Exception as exc:  # a bug: still one line here; the traceback goes to the debug log
        logger.debug("%s failed", command, exc_info=True)
        message = f"unexpected {type(exc).__name__}: {exc}"
    print(f"error: {message}", file=sys.stderr)
    return None, status


def _mint(argv: list[str]) -> str:
    settings = CliApp.run(MintSettings, cli_args=argv)
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
    logger.info("signing with %s/%s at %s", settings.vault_transit_mount, settings.vault_transit_key, session.addr)
    return mint_token(session, settings.vault_transit_mount, settings.vault_transit_key, request)


def _subcommand(argv: list[str], command: str, usage: str, body: Callable[[list[str]], T]) -> tuple[T | None, int]:
    """Run `body` on the arguments after the one subcommand word `command` ("token mint" takes
    "mint"); (result, 0), or (None, exit status) after printing the usage or the failure."""
    _setup_logging()
    group, _, word = command.partition(" ")
    if not argv or argv[0] != word:
        print(f"usage: autoglm-server {group} {word} {usage}", file=sys.stderr)
        return None, 2
    return _run(command, lambda: body(argv[1:]))


def token_main(argv: list[str]) -> int:
    """`autoglm-server token mint ...`; returns the exit status."""
    token, status = _subcommand(argv, "token mint", "--sub NAME [--scope S] [--ttl 15m] ...", _mint)
    if token is None:
        return status
    print(token)
    return 0


def _plan(settings: BootstrapSettings) -> BootstrapPlan:
    rotate_s = int(parse_duration(settings.auto_rotate_period))
    if rotate_s < 3600:
        raise ValueError("--auto-rotate-period must be at least 1h (Vault's minimum)")
    ca = Path(settings.kubernetes_ca_cert_file).read_text() if settings.kubernetes_ca_cert_file else ""
    return BootstrapPlan(
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


def _report(step: str, outcome: str) -> None:
    # Printed as each step finishes, so a failure shows how far bootstrap got.
    print(f"{outcome:>9}  {step}", file=sys.stderr, flush=True)


def _bootstrap(argv: list[str]) -> int:
    settings = CliApp.run(BootstrapSettings, cli_args=argv)
    plan = _plan(settings)
    session = VaultSession(settings)
    logger.info("bootstrapping Vault at %s", session.addr)
    return len(bootstrap(session, plan, report=_report))


def vault_main(argv: list[str]) -> int:
    """`autoglm-server vault bootstrap ...`; returns the exit status."""
    steps, status = _subcommand(argv, "vault bootstrap", "[--vault-addr URL] ...", _bootstrap)
    if steps is None:
        return status
    logger.info("bootstrap done: %d steps", steps)
    return 0
