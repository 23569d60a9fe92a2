"""The one exception tree of the daemon, and its one mapping onto gRPC status codes.

    AutoglmError                      base; never raised itself
    ├── InvalidRequestError           INVALID_ARGUMENT  the request breaks a documented rule
    │   ├── RequestTooLargeError      INVALID_ARGUMENT  could never fit the engine's limits
    │   └── PayloadTooLargeError      INVALID_ARGUMENT  over a byte/pixel/count cap (HTTP 413)
    ├── AuthenticationError           UNAUTHENTICATED   missing or bad credentials (says which check)
    ├── PermissionDeniedError         PERMISSION_DENIED valid token without the needed scope
    ├── OverloadedError               RESOURCE_EXHAUSTED admission limits hit now; carries RetryInfo
    │   └── OutOfMemoryError          RESOURCE_EXHAUSTED the batch this request was in ran out of memory
    ├── UnavailableError              UNAVAILABLE       starting, draining or engine stopped; retry elsewhere
    ├── DeadlineExceededError         DEADLINE_EXCEEDED the request's deadline passed in the engine
    ├── CancelledError                CANCELLED         the request was aborted
    └── EngineFailedError             INTERNAL          the engine loop died; the process will exit

Anything else that escapes a handler becomes INTERNAL with a correlation id: the detail goes to the
log, never to the client. Auth failures are never UNAVAILABLE (a mesh would retry them).
"""

from __future__ import annotations

import grpc


class AutoglmError(Exception):
    """Base of every error the daemon reports to a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(AutoglmError):
    """The request breaks a documented rule; `field` names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class RequestTooLargeError(InvalidRequestError):
    """The request could never be admitted, whatever the load."""


class PayloadTooLargeError(InvalidRequestError):
    """Part of the request is over a size cap (bytes of an image, pixels, image count, body size).

    INVALID_ARGUMENT over gRPC like any bad field; the HTTP front door answers 413.
    """


class AuthenticationError(AutoglmError):
    """No credentials, or credentials that fail a check."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(AutoglmError):
    """Valid credentials that lack the scope the RPC needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class OverloadedError(AutoglmError):
    """An admission limit is reached now; retry after `retry_after_s`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, reason: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class OutOfMemoryError(OverloadedError):
    """The engine step that held this request ran out of device memory."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, reason="out_of_memory", retry_after_s=retry_after_s)


class UnavailableError(AutoglmError):
    """The daemon cannot serve now (starting, draining); another replica may."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(AutoglmError):
    """The request's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(AutoglmError):
    """The request was aborted before it finished."""

    code = grpc.StatusCode.CANCELLED


class EngineFailedError(AutoglmError):
    """The engine loop died; the process is about to exit so that it is restarted."""

    code = grpc.StatusCode.INTERNAL


class StartupError(Exception):
    """The daemon cannot start (model not found, port taken, bad settings).

    Not an AutoglmError: no client ever sees it. main() prints its message alone, without a
    traceback, and exits with `exit_code` (1; subclasses with a cause of their own say so).
    """

    exit_code: int = 1
