"""Builds authentication from Settings: key source -> keyring -> verifier -> interceptor."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from autoglm_server import names
from autoglm_server.admin_http import Route
from autoglm_server.auth.http import HttpAuthenticator
from autoglm_server.auth.interceptor import AuthInterceptor, method_scopes
from autoglm_server.auth.jwks_route import JwksRoute
from autoglm_server.auth.keyring import Keyring
from autoglm_server.auth.settings import AuthSettings
from autoglm_server.auth.sources import JwksFileSource, KeySource, VaultOidcSource, VaultTransitSource
from autoglm_server.auth.vault import VaultSession
from autoglm_server.auth.verifier import Verifier, VerifierConfig

logger = logging.getLogger(__name__)


class AuthStartError(RuntimeError):
    """The first key fetch failed: the daemon cannot verify anything yet."""


def build_source(settings: AuthSettings) -> KeySource:
    if settings.key_source == "jwks-file":
        if not settings.jwks_file:
            raise ValueError("--key-source jwks-file needs --jwks-file")
        return JwksFileSource(settings.jwks_file)
    session = VaultSession(settings)
    if settings.key_source == "vault-oidc":
        return VaultOidcSource(session, expected_issuer=settings.jwt_issuer)
    return VaultTransitSource(session, settings.vault_transit_mount, settings.vault_transit_key)


class AuthRuntime:
    """What the daemon holds while auth is on: the interceptor, the keyring's lifecycle, readiness."""

    def __init__(self, settings: AuthSettings, source: KeySource) -> None:
        self._settings = settings
        self.keyring = Keyring(
            source,
            refresh_interval=settings.key_refresh_interval,
            min_interval=settings.key_refresh_min_interval,
            max_staleness=settings.key_max_staleness,
        )
        self.verifier = Verifier(
            self.keyring,
            VerifierConfig(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                leeway=settings.jwt_leeway,
                max_token_bytes=settings.max_token_bytes,
            ),
        )
        # Observability binds this: called with a short reason label on every rejected call.
        self.on_failure: Callable[[str], None] | None = None
        self.interceptor: grpc.aio.ServerInterceptor = AuthInterceptor(
            self.verifier,
            method_scopes(settings.scope_generate, settings.scope_models_read),
            on_failure=lambda: self.on_failure,
        )
        # The HTTP front door's checks: the same verifier; app.py binds its failure metric.
        self.http = HttpAuthenticator(self.verifier)
        self._jwks = JwksRoute(max_age_s=int(settings.key_refresh_interval))
        self.keyring.add_listener(self._jwks.update)

    async def start(self) -> None:
        """Fetch the keys once, then keep them fresh in the background.

        A failed first fetch does not stop start-up: the refresh loop keeps trying with backoff and
        readiness stays NOT_SERVING (keys_fresh() is False) until one succeeds.
        """
        if not await self.keyring.refresh():
            logger.error("no verification keys yet; readiness stays NOT_SERVING until a fetch succeeds")
        self.keyring.start()

    async def stop(self) -> None:
        await self.keyring.stop()

    def keys_fresh(self) -> bool:
        return self.keyring.is_fresh()

    def key_age_seconds(self) -> float | None:
        return self.keyring.key_age_seconds()

    def admin_routes(self) -> dict[str, Route]:
        return {names.JWKS_PATH: self._jwks}


def build_auth(settings: AuthSettings) -> AuthRuntime | None:
    """The auth runtime, or None when auth is disabled (a warning says so)."""
    if settings.auth == "disabled":
        logger.warning("authentication is DISABLED: every caller is trusted (development only)")
        return None
    return AuthRuntime(settings, build_source(settings))
