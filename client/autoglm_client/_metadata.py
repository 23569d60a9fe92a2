"""Per-call metadata: the bearer token and the caller's trace context (W3C traceparent).

The SDK owns every call site, so it attaches metadata per call instead of through channel
interceptors: the same code serves the sync and the asyncio client, and grpc.aio interceptors
would add a wrapper around every streamed message.
"""

from __future__ import annotations

from collections.abc import Callable

Metadata = tuple[tuple[str, str], ...]


def _trace_injector() -> Callable[[dict[str, str]], None] | None:
    """OpenTelemetry's global propagator (W3C traceparent by default), or None when not installed."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return None
    return propagate.inject


class CallMetadata:
    """Builds the metadata of one call: trace context, then `authorization: Bearer ...`."""

    def __init__(self, bearer: Callable[[], str] | None, *, propagate_trace: bool = True) -> None:
        self._bearer = bearer
        self._inject = _trace_injector() if propagate_trace else None

    def __call__(self) -> Metadata | None:
        pairs: list[tuple[str, str]] = []
        if self._inject is not None:
            carrier: dict[str, str] = {}
            self._inject(carrier)  # writes nothing when there is no current span
            pairs.extend((key.lower(), value) for key, value in carrier.items())
        if self._bearer is not None:
            pairs.append(("authorization", f"Bearer {self._bearer()}"))
        return tuple(pairs) or None
