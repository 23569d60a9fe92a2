"""A logged-in hvac client that stays logged in.

hvac is synchronous: every method here blocks, and callers on the event loop run them with
asyncio.to_thread. One lock serialises them, so a refresh and a login never race.

Login: a token (setting, file or $VAULT_TOKEN), AppRole (role_id + a secret_id file) or Kubernetes
(the projected service-account token, re-read at each login because the kubelet rotates it). A
token with a TTL is renewed once two thirds of it are gone; when renewal fails we log in again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
from hvac import exceptions as hvac_exc

from autoglm_server.auth.settings import VaultSettings

logger = logging.getLogger(__name__)

# Renew when less than this fraction of the token's TTL is left.
_RENEW_FRACTION = 1 / 3


class VaultError(RuntimeError):
    """Vault could not be reached or refused a request; the message names which."""


@dataclass(frozen=True, slots=True)
class VaultConnection:
    """Where Vault is, after the daemon's settings and Vault's own variables are merged."""

    addr: str
    token: str
    cacert: str
    namespace: str


def resolve_connection(settings: VaultSettings, environ: Mapping[str, str] | None = None) -> VaultConnection:
    """The daemon's own settings win; VAULT_* variables fill what they leave empty."""
    env = os.environ if environ is None else environ
    addr = settings.vault_addr or env.get("VAULT_ADDR", "")
    if not addr:
        raise VaultError("no Vault address: set --vault-addr or VAULT_ADDR")
    return VaultConnection(
        addr=addr,
        token=settings.vault_token.get_secret_value() or env.get("VAULT_TOKEN", ""),
        cacert=settings.vault_cacert or env.get("VAULT_CACERT", ""),
        namespace=settings.vault_namespace or env.get("VAULT_NAMESPACE", ""),
    )


def _read_secret_file(path: str, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise VaultError(f"the {what} file {path} is empty")
    return value


class VaultSession:
    """An hvac client plus the login and renewal that keep its token valid."""

    def __init__(self, settings: VaultSettings, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._conn = resolve_connection(settings, environ)
        self._lock = threading.Lock()
        self._client = hvac.Client(
            url=self._conn.addr,
            verify=self._conn.cacert or True,
            namespace=self._conn.namespace or None,
            timeout=settings.vault_request_timeout,
        )
        self._logged_in = False
        self._token_file_mtime: int | None = None
        self._renew_at: float | None = None  # monotonic time; None: never expires or unknown

    @property
    def addr(self) -> str:
        return self._conn.addr

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(client, ...)` with a valid token; log in again once if Vault says it is not."""
        with self._lock:
            self._ensure_token()
            try:
                return fn(self._client, *args, **kwargs)
            except hvac_exc.Forbidden:
                if self._settings.vault_auth_method == "token" and not self._settings.vault_token_file:
                    raise
                logger.warning("Vault refused the token; logging in again")
                self._logged_in = False
                self._ensure_token()
                return fn(self._client, *args, **kwargs)

    def _ensure_token(self) -> None:
        method = self._settings.vault_auth_method
        if method == "token" and self._settings.vault_token_file:
            self._reload_token_file()
        if not self._logged_in:
            self._login()
        elif self._renew_at is not None and time.monotonic() >= self._renew_at:
            self._renew()

    def _reload_token_file(self) -> None:
        path = self._settings.vault_token_file
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError as exc:
            raise VaultError(f"cannot read the Vault token file {path}: {exc.strerror}") from exc
        if mtime != self._token_file_mtime:
            self._token_file_mtime = mtime
            self._logged_in = False

    def _login(self) -> None:
        s = self._settings
        method = s.vault_auth_method
        try:
            if method == "approle":
                secret_id = _read_secret_file(s.vault_approle_secret_id_file, "AppRole secret_id")
                self._client.auth.approle.login(
                    role_id=s.vault_approle_role_id, secret_id=secret_id, mount_point=s.vault_approle_mount
                )
            elif method == "kubernetes":
                jwt = _read_secret_file(s.vault_kubernetes_token_file, "Kubernetes service-account token")
                self._client.auth.kubernetes.login(
                    role=s.vault_kubernetes_role, jwt=jwt, mount_point=s.vault_kubernetes_mount
                )
            else:
                token = _read_secret_file(s.vault_token_file, "Vault token") if s.vault_token_file else self._conn.token
                if not token:
                    raise VaultError("no Vault token: set --vault-token, --vault-token-file or VAULT_TOKEN")
                self._client.token = token
            self._schedule_renewal()
        except hvac_exc.VaultError as exc:
            raise VaultError(f"Vault login ({method}) failed: {type(exc).__name__}") from exc
        self._logged_in = True
        logger.info("logged in to Vault at %s (%s)", self._conn.addr, method)

    def _schedule_renewal(self) -> None:
        data = self._client.auth.token.lookup_self()["data"]
        ttl = int(data.get("ttl") or 0)
        # A token that is not renewable fails its renewal and so triggers a fresh login in time.
        self._renew_at = time.monotonic() + ttl * (1 - _RENEW_FRACTION) if ttl > 0 else None

    def _renew(self) -> None:
        try:
            self._client.auth.token.renew_self()
            self._schedule_renewal()
            logger.debug("renewed the Vault token")
        except (hvac_exc.VaultError, OSError) as exc:
            logger.warning("renewing the Vault token failed (%s); logging in again", type(exc).__name__)
            self._logged_in = False
            self._login()
