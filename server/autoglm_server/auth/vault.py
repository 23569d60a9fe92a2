"""A logged-in hvac client that stays logged in.

hvac is synchronous: every method here blocks, and callers on the event loop run them with
asyncio.to_thread. One lock serialises them, so a refresh and a login never race.

Login: a token (setting, file or $VAULT_TOKEN), AppRole (role_id + a secret_id file) or Kubernetes
(the projected service-account token, re-read at each login because the kubelet rotates it).

Token lifetime: once two thirds of a token's TTL are gone, the next call renews it. When Vault
refuses the renewal (revoked, expired) or caps it (the token nears its max TTL), we log in again
instead. When Vault is unreachable we keep the token and try again at the next call: logging in
anew would gain nothing and, for AppRole, could burn secret_id uses. Renewal happens inside
`call()`, so it needs calls: the keyring makes one every refresh interval (60 s by default). A token
whose TTL is shorter than that may expire between calls; the next call then gets 403 and logs in
again (AppRole, Kubernetes, token file), so give the daemon's roles a TTL well above the interval.

Errors: a Vault that cannot be reached becomes one VaultError naming the address and the cause;
a failed login one VaultError naming the method and Vault's answer. Neither carries a secret: Vault's
error texts never echo the credentials, and we never format a token or secret_id into a message.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hvac
import requests
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


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def unreachable_reason(exc: requests.RequestException) -> str:
    """A short cause for a failed request: 'connection refused', not three nested reprs."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed (check --vault-cacert / VAULT_CACERT)"
    match = _ERRNO_TEXT.search(str(exc))
    if match:
        return match.group(1).strip().lower()
    return type(exc).__name__


_ERROR_COUNT = re.compile(r"^\d+ errors? occurred:$")


def vault_message(exc: hvac_exc.VaultError) -> str:
    """Vault's answer on one line: it may be a multi-line '1 error occurred:\n\t* permission denied'."""
    lines = (line.strip().removeprefix("* ") for line in str(exc).splitlines())
    return "; ".join(line for line in lines if line and not _ERROR_COUNT.match(line))


Action = Literal["renew", "login"]


class VaultSession:
    """An hvac client plus the login and renewal that keep its token valid."""

    def __init__(
        self,
        settings: VaultSettings,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._conn = resolve_connection(settings, environ)
        self._clock = clock
        self._lock = threading.Lock()
        self._client = hvac.Client(
            url=self._conn.addr,
            # hvac would otherwise read $VAULT_TOKEN / ~/.vault-token itself; we decide what token to use.
            token="",
            verify=self._conn.cacert or True,
            namespace=self._conn.namespace or None,
            timeout=settings.vault_request_timeout,
        )
        self._logged_in = False
        self._token_file_mtime: int | None = None
        self._granted_ttl = 0  # the TTL the current token got at login
        self._next: tuple[float, Action] | None = None  # (monotonic time, what to do); None: nothing

    @property
    def addr(self) -> str:
        return self._conn.addr

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(client, ...)` with a valid token; log in again once if Vault says it is not.

        Blocks (hvac is synchronous): from the event loop, run it with asyncio.to_thread.
        """
        with self._lock:
            try:
                self._ensure_token()
                try:
                    return fn(self._client, *args, **kwargs)
                except hvac_exc.Forbidden:
                    if not self._can_log_in_again():
                        raise
                    logger.warning("Vault refused the token; logging in again")
                    self._logged_in = False
                    self._ensure_token()
                    return fn(self._client, *args, **kwargs)
            except requests.RequestException as exc:
                raise VaultError(f"cannot reach Vault at {self._conn.addr}: {unreachable_reason(exc)}") from exc

    def _can_log_in_again(self) -> bool:
        """A fresh login can yield a different token (not so for a fixed --vault-token / $VAULT_TOKEN)."""
        return self._settings.vault_auth_method != "token" or bool(self._settings.vault_token_file)

    def _ensure_token(self) -> None:
        if self._settings.vault_auth_method == "token" and self._settings.vault_token_file:
            self._reload_token_file()
        if not self._logged_in:
            self._login()
            return
        if self._next is None or self._clock() < self._next[0]:
            return
        if self._next[1] == "renew":
            self._renew()
        else:
            logger.info("the Vault token nears its max TTL; logging in again")
            self._logged_in = False
            self._login()

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
        method = self._settings.vault_auth_method
        try:
            ttl, renewable = self._login_with(method)
        except hvac_exc.VaultError as exc:
            raise VaultError(f"Vault login ({method}) failed: {vault_message(exc)}") from exc
        self._logged_in = True
        self._granted_ttl = ttl
        self._plan(ttl, renewable)
        logger.info("logged in to Vault at %s (%s; token TTL %s)", self._conn.addr, method, ttl or "none")

    def _login_with(self, method: str) -> tuple[int, bool]:
        """Log in; returns the new token's TTL in seconds (0: never expires) and whether it renews."""
        s = self._settings
        if method == "approle":
            # Re-read at each login: a secret_id is often delivered (and replaced) by an agent.
            secret_id = _read_secret_file(s.vault_approle_secret_id_file, "AppRole secret_id")
            auth = self._client.auth.approle.login(
                role_id=s.vault_approle_role_id, secret_id=secret_id, mount_point=s.vault_approle_mount
            )["auth"]
        elif method == "kubernetes":
            # Re-read at each login: the kubelet rewrites the projected token long before it expires.
            jwt = _read_secret_file(s.vault_kubernetes_token_file, "Kubernetes service-account token")
            auth = self._client.auth.kubernetes.login(
                role=s.vault_kubernetes_role, jwt=jwt, mount_point=s.vault_kubernetes_mount
            )["auth"]
        else:
            token = _read_secret_file(s.vault_token_file, "Vault token") if s.vault_token_file else self._conn.token
            if not token:
                raise VaultError("no Vault token: set --vault-token, --vault-token-file or VAULT_TOKEN")
            self._client.token = token
            # A token we were handed: ask Vault whether it is valid, and for how long.
            data = self._client.auth.token.lookup_self()["data"]
            return int(data.get("ttl") or 0), bool(data.get("renewable"))
        return int(auth.get("lease_duration") or 0), bool(auth.get("renewable"))

    def _plan(self, ttl: int, renewable: bool) -> None:
        """Schedule what keeps this token valid: renew it, or (not renewable) log in again."""
        if ttl <= 0:
            self._next = None  # a token without TTL (e.g. a root token) never expires
            return
        action: Action = "renew" if renewable else "login"
        if action == "login" and not self._can_log_in_again():
            self._next = None  # nothing to do: it will expire, and calls then fail with 403
            return
        self._next = (self._clock() + ttl * (1 - _RENEW_FRACTION), action)

    def _renew(self) -> None:
        try:
            auth = self._client.auth.token.renew_self()["auth"]
        except hvac_exc.VaultError as exc:
            # Vault answered and said no (revoked, expired): this token is done. A network error is
            # not caught here: the token may still be good, so call() reports it and we retry later.
            if not self._can_log_in_again():
                logger.warning("renewing the Vault token failed (%s); it cannot be replaced", vault_message(exc))
                self._next = None
                return
            logger.warning("renewing the Vault token failed (%s); logging in again", vault_message(exc))
            self._logged_in = False
            self._login()
            return
        ttl = int(auth.get("lease_duration") or 0)
        logger.debug("renewed the Vault token for %d s", ttl)
        if 0 < ttl < self._granted_ttl and self._can_log_in_again():
            # Capped by the token's max TTL: more renewals would only shrink it. Log in again in time.
            self._next = (self._clock() + ttl * (1 - _RENEW_FRACTION), "login")
        else:
            self._plan(ttl, renewable=True)
