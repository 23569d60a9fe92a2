"""Per-call metadata: the bearer token, the caller's trace context (W3C traceparent), the session.

The SDK owns every call site, so it attaches metadata per call instead of through channel
interceptors: the same code serves the sync and the asyncio client, and grpc.aio interceptors
would add a wrapper around every streamed message.
"""

from __future__ import annotations

from collections.abc import Callable

Metadata = tuple[tuple[str, str], ...]

# The metadata key that names an agent's session, so a mesh can send its steps to one replica
# (the one whose prefix cache holds the conversation so far). The daemon only logs and traces it.
# It must equal autoglm_server.names.SESSION_HEADER; the SDK cannot import the server, so the
# server's tests check that the two agree.
SESSION_HEADER = "x-autoglm-session"
MAX_SESSION_ID_CHARS = 128  # the daemon keeps no more than this in its logs and traces


def check_session_id(session_id: str | None) -> str | None:
    """The session id, or None for none; ValueError unless it is printable ASCII of a sane length.

    gRPC metadata values (and HTTP header values) must be printable ASCII; checked here, a bad id
    fails with its reason instead of as an opaque transport error.
    """
    if session_id is None or session_id == "":
        return None
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be str, got {type(session_id).__name__}")
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise ValueError(f"session_id must be at most {MAX_SESSION_ID_CHARS} characters, got {len(session_id)}")
    if not all(" " < c <= "~" for c in session_id):
        raise ValueError("session_id must be printable ASCII without spaces")
    return session_id


def _trace_injector() -> Callable[[dict[str, str]], None] | None:
    """OpenTelemetry's global propagator (W3C traceparent by default), or None when not installed."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return None
    return propagate.inject


class CallMetadata:
    """Builds the metadata of one call: trace context, the session, then `authorization: Bearer ...`."""

    def __init__(self, bearer: Callable[[], str] | None, *, propagate_trace: bool = True) -> None:
        self._bearer = bearer
        self._inject = _trace_injector() if propagate_trace else None

    def __call__(self, session_id: str | None = None) -> Metadata | None:
        pairs: list[tuple[str, str]] = []
        if self._inject is not None:
            carrier: dict[str, str] = {}
            self._inject(carrier)  # writes nothing when there is no current span
            pairs.extend((key.lower(), value) for key, value in carrier.items())
        if session_id:
            pairs.append((SESSION_HEADER, session_id))
        if self._bearer is not None:
            pairs.append(("authorization", f"Bearer {self._bearer()}"))
        return tuple(pairs) or None
