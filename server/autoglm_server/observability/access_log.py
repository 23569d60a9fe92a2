"""The access log: one line per RPC with method, status, duration and, for Generate, token counts.

Written when the RPC's task ends (rpc_outcome), so cancelled and refused calls get their line too.
The servicer's observer fills in the token counts and finish reason (log_context.CallSummary).
Health checks and reflection are left out unless asked for: probes would drown the rest.
"""

from __future__ import annotations

import logging

import grpc
from opentelemetry import trace

from autoglm_server import names
from autoglm_server.observability import log_context, rpc_outcome
from autoglm_server.observability.log_context import CallSummary
from autoglm_server.observability.rpc_outcome import CallTracker, Continuation

access_logger = logging.getLogger("autoglm_server.access")


class AccessLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Logs each RPC once, when it ends."""

    def __init__(self, *, include_health_checks: bool = False) -> None:
        self._skip: tuple[str, ...] = (
            () if include_health_checks else (names.HEALTH_SERVICE_PREFIX, names.REFLECTION_SERVICE_PREFIX)
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(self._skip) or not access_logger.isEnabledFor(logging.INFO):
            return await continuation(handler_call_details)
        tracker = rpc_outcome.track_call(method)
        tracker.add_listener(_AccessLine(log_context.begin_call_summary(), trace.get_current_span()))
        return await tracker.resolve(continuation, handler_call_details)


class _AccessLine:
    __slots__ = ("_span", "_summary")

    def __init__(self, summary: CallSummary, span: trace.Span) -> None:
        self._summary = summary
        self._span = span

    def __call__(self, tracker: CallTracker, code: grpc.StatusCode) -> None:
        summary = self._summary
        span_context = self._span.get_span_context()
        fields: dict[str, object] = {
            "grpc_method": tracker.method,
            "grpc_code": code.name,
            "duration_ms": round(tracker.duration_s * 1000, 3),
            # The done callback runs outside the RPC's context: carry its ids explicitly.
            "request_id": summary.request_id,
            "subject": summary.subject,
            "trace_id": trace.format_trace_id(span_context.trace_id) if span_context.is_valid else "",
            "span_id": trace.format_span_id(span_context.span_id) if span_context.is_valid else "",
        }
        if summary.prompt_tokens is not None:
            fields["prompt_tokens"] = summary.prompt_tokens
        if summary.generated_tokens is not None:
            fields["generated_tokens"] = summary.generated_tokens
        if summary.finish_reason:
            fields["finish_reason"] = summary.finish_reason
        if summary.rejection:
            fields["rejection"] = summary.rejection
        if summary.session_id:
            fields["session_id"] = summary.session_id
        access_logger.info("%s %s %.1f ms", tracker.method, code.name, tracker.duration_s * 1000, extra=fields)
