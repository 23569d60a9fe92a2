"""Bearer-token providers: callables that return the token to send with each call.

Any `Callable[[], str]` works as a provider. A provider is called once per RPC, so it must be
cheap: the providers here cache and only do I/O when the token may have changed.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TokenProvider = Callable[[], str]
"""A callable returning the bearer token (without the `Bearer ` prefix) for the next call."""


class TokenError(RuntimeError):
    """A provider could not produce a token (empty file, Vault refused, ...)."""


class StaticToken:
    """Always the same token (for scripts and tests; tokens expire, so prefer a refreshing source)."""

    def __init__(self, token: str) -> None:
        token = token.strip()
        if not token:
            raise TokenError("the token is empty")
        self._token = token

    def __call__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(***)"  # never print the token itself


class FileToken:
    """A token read from a file, read again whenever the file changes (mtime, size or inode).

    Fits tokens that another process rotates in place: a Kubernetes projected token, or a sidecar
    that writes a fresh JWT before the old one expires.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    @property
    def path(self) -> Path:
        return self._path

    def __call__(self) -> str:
        try:
            info = self._path.stat()
        except OSError as exc:
            raise TokenError(f"cannot read the token file {self._path}: {exc.strerror}") from exc
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        with self._lock:
            if stamp != self._stamp:
                token = self._path.read_text(encoding="utf-8").strip()
                if not token:
                    raise TokenError(f"the token file {self._path} is empty")
                self._token, self._stamp = token, stamp
            return self._token

    def __repr__(self) -> str:
        return f"FileToken({str(self._path)!r})"


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to know when to refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
    except (IndexError, ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


class VaultIdentityToken:
    """A Vault identity token (`identity/oidc/token/ROLE`), cached until shortly before it expires.

    Needs the `vault` extra (hvac). Logs in with a Vault token (argument, file, or VAULT_TOKEN) or
    with AppRole (role id + secret id, or a secret-id file); with AppRole it logs in again at each
    refresh, so an expired Vault token never sticks. VAULT_ADDR, VAULT_NAMESPACE and VAULT_CACERT
    are honoured when the matching argument is not given.
    """

    def __init__(
        self,
        role: str,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        approle_role_id: str | None = None,
        approle_secret_id: str | None = None,
        approle_secret_id_file: str | os.PathLike[str] | None = None,
        approle_mount: str = "approle",
        namespace: str | None = None,
        ca_cert: str | None = None,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._role = role
        self._url = url or os.environ.get("VAULT_ADDR") or "http://127.0.0.1:8200"
        self._token = token
        self._token_file = Path(token_file) if token_file else None
        self._role_id = approle_role_id
        self._secret_id = approle_secret_id
        self._secret_id_file = Path(approle_secret_id_file) if approle_secret_id_file else None
        self._approle_mount = approle_mount
        self._namespace = namespace or os.environ.get("VAULT_NAMESPACE") or None
        self._verify: str | bool = ca_cert or os.environ.get("VAULT_CACERT") or True
        self._margin = refresh_margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached = ""
        self._refresh_at = 0.0
        self._fetches = 0

    @property
    def fetches(self) -> int:
        """How many times a token was fetched from Vault (for tests and logs)."""
        return self._fetches

    def __call__(self) -> str:
        with self._lock:
            if not self._cached or self._clock() >= self._refresh_at:
                self._cached, self._refresh_at = self._fetch()
                self._fetches += 1
            return self._cached

    def _fetch(self) -> tuple[str, float]:
        client = self._login()
        try:
            response = client.secrets.identity.generate_signed_id_token(name=self._role)
            token = str(response["data"]["token"])
        except Exception as exc:  # hvac raises many types; the caller needs one
            raise TokenError(f"Vault refused an identity token for role {self._role!r}: {exc}") from exc
        now = self._clock()
        ttl = float(response["data"].get("ttl") or 0)
        expiry = jwt_expiry(token) or (now + ttl if ttl > 0 else now)
        lifetime = max(expiry - now, 0.0)
        # Refresh early, but never spend more than a fifth of a short-lived token's life on margin.
        return token, expiry - min(self._margin, lifetime / 5)

    def _login(self) -> Any:
        try:
            import hvac
        except ImportError as exc:
            raise TokenError("VaultIdentityToken needs hvac: pip install 'autoglm-client[vault]'") from exc
        client = hvac.Client(url=self._url, namespace=self._namespace, verify=self._verify)
        if self._role_id:
            secret_id = self._secret_id
            if self._secret_id_file is not None:
                secret_id = self._secret_id_file.read_text(encoding="utf-8").strip()
            try:
                client.auth.approle.login(role_id=self._role_id, secret_id=secret_id, mount_point=self._approle_mount)
            except Exception as exc:
                raise TokenError(f"Vault AppRole login failed: {exc}") from exc
            return client
        token = self._token
        if self._token_file is not None:
            token = self._token_file.read_text(encoding="utf-8").strip()
        token = token or os.environ.get("VAULT_TOKEN")
        if not token:
            raise TokenError("no Vault token: pass token=, token_file=, AppRole ids, or set VAULT_TOKEN")
        client.token = token
        return client

    def __repr__(self) -> str:
        return f"VaultIdentityToken(role={self._role!r}, url={self._url!r})"
