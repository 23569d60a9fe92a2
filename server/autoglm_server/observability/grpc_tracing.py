"""The tracing server interceptor: one SERVER span per RPC, child of the caller's span.

It must be the first interceptor, so that a call that a later one rejects (auth, overload) still
leaves a span with its status. The span is made current in the RPC's task (grpc.aio runs each RPC,
interceptors and handler together, in a task of its own), so the auth interceptor, the servicer,
its observer and every log line of the call see it. It is attached and never detached: the task's
context copy dies with the task, and a detach could only fail (when a generator is closed from
another task) or be skipped. The span ends in the task's done callback (rpc_outcome), which also
runs for client cancels and deadlines, with the status code the client saw.

Why not opentelemetry-instrumentation-grpc's aio server interceptor: it wraps the handler in
`start_as_current_span` inside the response generator, so a cancel that lands in grpc's `write`
leaves the generator to be closed by the garbage collector in another task, which logs "Failed to
detach context" and ends the span late and without CANCELLED.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from autoglm_server import names
from autoglm_server.observability import log_context, rpc_outcome
from autoglm_server.observability.rpc_outcome import CallTracker, Continuation

# Attribute names (OpenTelemetry RPC and GenAI semantic conventions, plus our own).
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
REQUEST_ID = "autoglm.request_id"
SUBJECT = log_context.ENDUSER_ID
GRPC_STATUS_MESSAGE = "autoglm.grpc.status_message"


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()


def _carrier(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The text (non -bin) metadata, which is where traceparent and tracestate travel."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key.lower()] = value
    return carrier


def split_method(method: str) -> tuple[str, str]:
    """'/autoglm.v1.GenerationService/Generate' -> ('autoglm.v1.GenerationService', 'Generate')."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Starts a SERVER span per RPC from the incoming W3C trace context and ends it with its status."""

    def __init__(self, tracer: trace.Tracer, *, trace_health_checks: bool = False) -> None:
        self._tracer = tracer
        self._skip: tuple[str, ...] = (
            () if trace_health_checks else (names.HEALTH_SERVICE_PREFIX, names.REFLECTION_SERVICE_PREFIX)
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(self._skip):
            return await continuation(handler_call_details)
        parent = propagate.extract(_carrier(handler_call_details.invocation_metadata), getter=_GETTER)
        service, name = split_method(method)
        span = self._tracer.start_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name},
        )
        otel_context.attach(trace.set_span_in_context(span, parent))
        tracker = rpc_outcome.track_call(method)
        tracker.add_listener(_SpanEnder(span))
        return await tracker.resolve(continuation, handler_call_details)


# The codes that mean the server failed (OpenTelemetry's gRPC conventions for SERVER spans); the
# others (bad input, auth, cancel, overload) are the caller's business and leave the status unset,
# so a dashboard of error spans shows server faults only. The code itself is always an attribute.
SERVER_FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _SpanEnder:
    """Ends the RPC's span with the status the client saw."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __call__(self, tracker: CallTracker, code: grpc.StatusCode) -> None:
        span = self._span
        span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
        details = tracker.context.details() if tracker.context is not None else ""
        if details:
            span.set_attribute(GRPC_STATUS_MESSAGE, details)
        if code in SERVER_FAULT_CODES:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}" if details else code.name))
        error = tracker.error
        if code is grpc.StatusCode.UNKNOWN and error is not None and not isinstance(error, grpc.aio.AbortError):
            span.record_exception(error)
        span.end()


__all__ = ["TracingInterceptor", "split_method"]
