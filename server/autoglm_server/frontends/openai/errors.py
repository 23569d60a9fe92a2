"""The one error tree, mapped once onto HTTP statuses and OpenAI error bodies.

`{"error": {"message", "type", "param", "code"}}` with the statuses the official SDK turns into its
exception classes: 400 BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError, 404
NotFoundError, 408 (the body came too slowly; the connection is closed), 413, 429 RateLimitError
(with Retry-After and retry-after-ms, which the SDK's retry reads), 503 while starting or draining,
500 with a correlation id for anything unexpected. The gRPC code name of each error goes with it,
for the shared requests metric.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field

import grpc

from autoglm_server.errors import (
    AuthenticationError,
    AutoglmError,
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying a server that is starting or draining.
UNAVAILABLE_RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class HttpError:
    """What the client receives for one failure."""

    status: int
    body: dict[str, object]
    code: grpc.StatusCode  # the same failure's gRPC code, for metrics and the access log
    headers: dict[str, str] = field(default_factory=dict)


def _body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ModelNotFoundError(InvalidRequestError):
    """The body names a model this server does not serve (404)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, name: str, served: str) -> None:
        super().__init__("model", f"the model {name!r} does not exist here; this server serves {served!r}")


class BodyTimeoutError(DeadlineExceededError):
    """The client did not send its whole body within --http-body-timeout (408, connection closed).

    DEADLINE_EXCEEDED for the requests metric: a deadline passed, the client's own, not the engine's.
    """

    field = "body"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"body: the request body did not arrive within {timeout_s:g} s (--http-body-timeout); send the"
            " whole body at once"
        )


class UnsupportedMediaTypeError(InvalidRequestError):
    """The body is not declared as JSON (415).

    Refused rather than parsed anyway: a web page can make a browser post text/plain or a form to
    any address without a CORS preflight, but not application/json, so insisting on it keeps pages
    from driving a daemon on localhost (with auth disabled) behind its user's back.
    """


def to_http_error(error: AutoglmError) -> HttpError:
    if isinstance(error, BodyTimeoutError):
        # Closed: what is left of a half-sent body must not be read as the next request.
        body = _body(error.message, "timeout", error.field, "request_timeout")
        return HttpError(408, body, error.code, {"connection": "close"})
    if isinstance(error, UnsupportedMediaTypeError):
        return HttpError(415, _body(error.message, "invalid_request_error", error.field), error.code)
    if isinstance(error, ModelNotFoundError):
        return HttpError(404, _body(error.message, "invalid_request_error", "model", "model_not_found"), error.code)
    if isinstance(error, PayloadTooLargeError):
        return HttpError(413, _body(error.message, "invalid_request_error", error.field), error.code)
    if isinstance(error, InvalidRequestError):
        return HttpError(400, _body(error.message, "invalid_request_error", error.field), error.code)
    if isinstance(error, AuthenticationError):
        headers = {"www-authenticate": "Bearer"}
        return HttpError(401, _body(error.message, "authentication_error", code="invalid_api_key"), error.code, headers)
    if isinstance(error, PermissionDeniedError):
        return HttpError(403, _body(error.message, "permission_error"), error.code)
    if isinstance(error, OverloadedError):
        delay = max(error.retry_after_s, 0.0)
        headers = {"retry-after": str(max(1, math.ceil(delay))), "retry-after-ms": str(int(delay * 1000))}
        return HttpError(429, _body(error.message, "rate_limit_error", code=error.reason), error.code, headers)
    if isinstance(error, UnavailableError):
        headers = {"retry-after": str(UNAVAILABLE_RETRY_AFTER_S)}
        return HttpError(503, _body(error.message, "service_unavailable"), error.code, headers)
    if isinstance(error, DeadlineExceededError):
        return HttpError(504, _body(error.message, "timeout"), error.code)
    if isinstance(error, CancelledError):
        return HttpError(499, _body(error.message, "cancelled"), error.code)
    return HttpError(500, _body(error.message, "server_error"), error.code)


def internal_error(error: BaseException) -> HttpError:
    """A generic 500; the detail goes to the log under a correlation id, never to the client."""
    correlation_id = uuid.uuid4().hex[:16]
    logger.error("unexpected error (correlation id %s)", correlation_id, exc_info=error)
    message = f"internal error; quote correlation id {correlation_id} to the operator"
    return HttpError(500, _body(message, "server_error"), grpc.StatusCode.INTERNAL)
