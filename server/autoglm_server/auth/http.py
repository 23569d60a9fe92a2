"""Bearer-token checks for the HTTP front door: the same verifier and scopes as the gRPC interceptor.

Failures are AuthenticationError (401) or PermissionDeniedError (403) only; a bug in a check fails
closed as 401, never as 500 or 503 (a load balancer would retry those).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoglm_server.auth.principal import Principal
from autoglm_server.auth.verifier import ScopeMissingError, TokenRejectedError, Verifier
from autoglm_server.errors import AuthenticationError

logger = logging.getLogger(__name__)


class HttpAuthenticator:
    """Checks an `Authorization` header value for one scope."""

    def __init__(self, verifier: Verifier, on_failure: Callable[[str], None] | None = None) -> None:
        self._verifier = verifier
        self.on_failure = on_failure

    async def check(self, authorization: str | None, scope: str) -> Principal:
        try:
            principal = await self._verifier.authenticate(authorization)
            self._verifier.authorize(principal, scope)
        except TokenRejectedError as error:
            self._failed(error.reason, error.message)
            raise
        except ScopeMissingError as error:
            self._failed("scope", error.message)
            raise
        except Exception as error:
            logger.exception("auth check failed unexpectedly; refusing the request")
            self._failed("check_error", "the token could not be checked")
            raise AuthenticationError("authentication failed: the token could not be checked") from error
        return principal

    def _failed(self, reason: str, message: str) -> None:
        if self.on_failure is not None:
            self.on_failure(reason)
        logger.info("rejected an HTTP request: %s", message)
