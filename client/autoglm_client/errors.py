"""The SDK's exception tree: every failed call raises one of these, keeping the gRPC status.

    AutoglmError                 base; raised itself for codes without a subclass (e.g. NOT_FOUND)
    ├── InvalidArgumentError     INVALID_ARGUMENT   the request breaks a rule; the message names the field
    ├── UnauthenticatedError     UNAUTHENTICATED    missing or bad token; the message says which check
    ├── PermissionDeniedError    PERMISSION_DENIED  valid token without the scope the RPC needs
    ├── ResourceExhaustedError   RESOURCE_EXHAUSTED the daemon is full now; `.retry_after` seconds
    ├── UnavailableError         UNAVAILABLE        daemon unreachable, starting or draining
    ├── DeadlineExceededError    DEADLINE_EXCEEDED  the call's timeout passed
    ├── CancelledError           CANCELLED          the call was cancelled
    └── InternalError            INTERNAL, UNKNOWN  a server fault (the message holds a correlation id)

Every error has `.code` (grpc.StatusCode), `.message` (the server's text) and `.details` (the
google.rpc.Status details from the `grpc-status-details-bin` trailer, as google.protobuf.Any).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2

from autoglm_client import _wire

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class AutoglmError(Exception):
    """A failed call: the gRPC status code, the server's message and any rich error details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: tuple[any_pb2.Any, ...] = ()) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details


class InvalidArgumentError(AutoglmError):
    """INVALID_ARGUMENT: the request breaks a documented rule; the message names the field."""


class UnauthenticatedError(AutoglmError):
    """UNAUTHENTICATED: no token, or a token that fails a check."""


class PermissionDeniedError(AutoglmError):
    """PERMISSION_DENIED: the token lacks the scope this RPC needs."""


class ResourceExhaustedError(AutoglmError):
    """RESOURCE_EXHAUSTED: an admission limit is reached; retry after `retry_after` seconds if set."""

    def __init__(self, code: grpc.StatusCode, message: str, details: tuple[any_pb2.Any, ...] = ()) -> None:
        super().__init__(code, message, details)
        self.retry_after: float | None = _retry_after(details)


class UnavailableError(AutoglmError):
    """UNAVAILABLE: the daemon cannot be reached or is not serving now (retried automatically)."""


class DeadlineExceededError(AutoglmError):
    """DEADLINE_EXCEEDED: the call's timeout passed before it finished."""


class CancelledError(AutoglmError):
    """CANCELLED: the call was cancelled, by the caller or the server."""


class InternalError(AutoglmError):
    """INTERNAL or UNKNOWN: a fault in the server, or a stream that broke the protocol."""


_BY_CODE: dict[grpc.StatusCode, type[AutoglmError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
}


def _retry_after(details: tuple[any_pb2.Any, ...]) -> float | None:
    for detail in details:
        delay = _wire.parse_retry_delay(detail)
        if delay is not None:
            return delay
    return None


def _status_details(trailers: Iterable[tuple[str, Any]] | None) -> tuple[any_pb2.Any, ...]:
    for key, value in trailers or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return _wire.parse_status(value).details
            except _wire.WireError:
                return ()  # a malformed trailer must not hide the status code itself
    return ()


def error_for(code: grpc.StatusCode, message: str, details: tuple[any_pb2.Any, ...] = ()) -> AutoglmError:
    """The exception of the class that matches `code`."""
    return _BY_CODE.get(code, AutoglmError)(code, message, details)


def from_rpc_error(error: grpc.RpcError) -> AutoglmError:
    """Convert a grpc (sync or aio) RpcError, reading rich details from its trailers."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return error_for(code or grpc.StatusCode.UNKNOWN, message or "", _status_details(trailers))
