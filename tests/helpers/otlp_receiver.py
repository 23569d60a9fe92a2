"""An OTLP/gRPC trace receiver for tests: what Jaeger's port 4317 does, minus the storage.

Built from opentelemetry-proto's service definition, served on 127.0.0.1:0 in this process (a
thread-pool server, so it receives while an asyncio test or a blocking call waits), it keeps every
span it is sent, flattened with its resource attributes, and lets a test wait for N of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SpanPredicate = Callable[["ReceivedSpan"], bool]


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: any_value(item.value) for item in items}


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as lower-case hex (as in traceparent)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_unix_nano: int
    end_unix_nano: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: tuple[ReceivedEvent, ...]
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.status_code == trace_pb2.Status.STATUS_CODE_ERROR

    def event(self, name: str) -> ReceivedEvent | None:
        return next((event for event in self.events if event.name == name), None)


def _flatten(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        start_unix_nano=span.start_time_unix_nano,
                        end_unix_nano=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        status_code=span.status.code,
                        status_message=span.status.message,
                        events=tuple(
                            ReceivedEvent(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events
                        ),
                        resource=resource,
                    )
                )
    return spans


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._add(_flatten(request), dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Collects exported spans; `endpoint` is what to give OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    def _add(self, spans: list[ReceivedSpan], headers: dict[str, str]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self.headers.append(headers)
            self._changed.notify_all()

    def spans(self, predicate: SpanPredicate | None = None) -> list[ReceivedSpan]:
        with self._changed:
            return [span for span in self._spans if predicate is None or predicate(span)]

    def wait_for_spans(
        self, count: int, predicate: SpanPredicate | None = None, timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """Block until at least `count` spans (matching `predicate`) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [span for span in self._spans if predicate is None or predicate(span)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted(span.name for span in self._spans)
                    raise TimeoutError(f"{len(found)} of {count} spans arrived in {timeout} s; all: {names}")
                self._changed.wait(left)

    async def wait_for_spans_async(
        self, count: int, predicate: SpanPredicate | None = None, wait_s: float = 15.0
    ) -> list[ReceivedSpan]:
        """wait_for_spans without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_spans, count, predicate, wait_s)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _RawExportHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers Export without parsing it: no deserializer, so the handler gets the raw bytes."""

    def __init__(self, sink: OtlpSink) -> None:
        self._handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        self._sink = sink

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handler if handler_call_details.method == EXPORT_METHOD else None

    def _export(self, request: bytes, context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        self._sink._add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpSink:
    """A receiver for benchmarks: it keeps the export requests as bytes and parses them only when
    asked, so that the collector's work (on another machine in production) does not compete for
    the CPU with what is being measured."""

    def __init__(self) -> None:
        self._requests: list[bytes] = []
        self._counted = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        self._server.add_generic_rpc_handlers((_RawExportHandler(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add(self, request: bytes) -> None:
        with self._lock:
            self._requests.append(request)

    def span_count(self) -> int:
        """Spans received so far (parses what arrived since the last call: call it after measuring)."""
        with self._lock:
            received, self._requests = self._requests, []
        for request in received:
            self._counted += len(_flatten(trace_service_pb2.ExportTraceServiceRequest.FromString(request)))
        return self._counted

    def wait_for_span_count(self, count: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while (found := self.span_count()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return found


@contextmanager
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    sink._server.start()
    try:
        yield sink
    finally:
        sink._server.stop(grace=None).wait()
