"""One HTTP request's observability: its SERVER span, its requests-total count, its access line.

The span is the child of the caller's W3C `traceparent` and is made current while the pipeline
admits the request, so the request observer (metrics, GenAI attributes, phase spans) finds it just
as it finds a gRPC call's span. `finish` runs once, when the response (or its stream) has ended.
"""

from __future__ import annotations

import logging
import time

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import Request

from autoglm_server.observability import log_context
from autoglm_server.observability.metrics import Metrics

access_logger = logging.getLogger("autoglm_server.access")

HTTP_STATUS = "http.response.status_code"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"


class HttpCall:
    """Follows one HTTP request from arrival to the end of its response."""

    def __init__(
        self, request: Request, route: str, *, tracer: trace.Tracer, metrics: Metrics | None, access_log: bool
    ) -> None:
        self.route = route
        self._metrics = metrics
        self._access_log = access_log
        self._start = time.monotonic()
        self._finished = False
        parent = propagate.extract(dict(request.headers))
        self.span = tracer.start_span(
            f"{request.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route, "url.path": request.url.path},
        )
        self.summary = log_context.begin_call_summary()

    def use(self) -> trace.Span:
        """The span, to make current with `trace.use_span(call.use(), end_on_exit=False)`."""
        return self.span

    def finish(self, status: int, code: grpc.StatusCode) -> None:
        if self._finished:
            return
        self._finished = True
        duration = time.monotonic() - self._start
        if self._metrics is not None:
            self._metrics.rpc_finished(self.route, code, "http")
        span = self.span
        if span.is_recording():
            span.set_attribute(HTTP_STATUS, status)
            span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        if self._access_log and access_logger.isEnabledFor(logging.INFO):
            self._log(status, code, duration)

    def _log(self, status: int, code: grpc.StatusCode, duration: float) -> None:
        summary = self.summary
        context = self.span.get_span_context()
        fields: dict[str, object] = {
            "http_route": self.route,
            "http_status": status,
            "grpc_code": code.name,
            "duration_ms": round(duration * 1000, 3),
            "request_id": summary.request_id,
            "subject": summary.subject,
            "trace_id": trace.format_trace_id(context.trace_id) if context.is_valid else "",
            "span_id": trace.format_span_id(context.span_id) if context.is_valid else "",
        }
        for name in ("prompt_tokens", "generated_tokens"):
            value = getattr(summary, name)
            if value is not None:
                fields[name] = value
        for name in ("finish_reason", "rejection", "session_id"):
            value = getattr(summary, name)
            if value:
                fields[name] = value
        access_logger.info("%s %d %.1f ms", self.route, status, duration * 1000, extra=fields)
