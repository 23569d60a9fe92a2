"""The tracing interceptor on a real grpc.aio server, exporting over OTLP to a real receiver."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from autoglm_client.v1 import generation_pb2 as pb
from tests.helpers.otlp_receiver import ReceivedSpan
from tests.observability.conftest import MODEL, ToyServer

GENERATE = "autoglm.v1.GenerationService/Generate"
TOKENIZE = "autoglm.v1.GenerationService/Tokenize"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
STATUS_UNSET, STATUS_ERROR = 0, 2


def named(name: str) -> object:
    return lambda span: span.name == name


async def server_span(toy: ToyServer, name: str = GENERATE) -> ReceivedSpan:
    """The one server span named `name`; it ends just after the client has its answer."""
    for _ in range(600):  # up to 30 s on a loaded machine; it breaks as soon as the span is there
        toy.flush()
        if toy.receiver.spans(named(name)):  # type: ignore[arg-type]
            break
        await asyncio.sleep(0.05)
    (span,) = toy.receiver.spans(named(name))  # type: ignore[arg-type]
    return span


async def drain(call: grpc.aio.UnaryStreamCall) -> list[pb.GenerateResponse]:
    return [message async for message in call]


async def test_unary_call_leaves_one_server_span_with_ok_status(toy: ToyServer) -> None:
    reply = await toy.stub.Tokenize(pb.TokenizeRequest(text="hi"))
    assert reply.count == 2
    span = await server_span(toy, TOKENIZE)
    assert span.kind == SERVER_KIND
    assert span.parent_span_id == ""
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "autoglm.v1.GenerationService"
    assert span.attributes["rpc.method"] == "Tokenize"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.status_code == STATUS_UNSET
    assert span.resource["service.name"] == "autoglm-server"
    assert span.resource["autoglm.model.version"] == "v-test"


async def test_caller_trace_continues_into_stream_span_with_genai_attributes_and_phases(toy: ToyServer) -> None:
    caller_provider = TracerProvider()  # the caller's own SDK; only its context travels
    caller = caller_provider.get_tracer("test-caller")
    with caller.start_as_current_span("caller", kind=SpanKind.CLIENT) as caller_span:
        metadata: dict[str, str] = {}
        propagate.inject(metadata)
        messages = await drain(
            toy.stub.Generate(
                pb.GenerateRequest(text="hi", max_new_tokens=4, request_id="req-42"), metadata=tuple(metadata.items())
            )
        )
    assert messages[-1].WhichOneof("kind") == "finished"
    caller_context = caller_span.get_span_context()

    span = await server_span(toy)
    assert span.trace_id == trace.format_trace_id(caller_context.trace_id)
    assert span.parent_span_id == trace.format_span_id(caller_context.span_id)
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["gen_ai.request.model"] == MODEL
    assert span.attributes["gen_ai.request.max_tokens"] == 4
    assert span.attributes["gen_ai.request.temperature"] == pytest.approx(0.5)
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    assert span.attributes["gen_ai.usage.output_tokens"] == 4
    assert span.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert span.attributes["autoglm.request_id"] == "req-42"
    assert span.attributes["autoglm.tenant"] == "tenant-a"
    first_token = span.event("gen_ai.first_token")
    assert first_token is not None
    assert span.start_unix_nano <= first_token.time_unix_nano <= span.end_unix_nano

    phases = await toy.receiver.wait_for_spans_async(3, lambda s: s.parent_span_id == span.span_id)
    by_name = {phase.name: phase for phase in phases}
    assert set(by_name) == {"autoglm.queue", "autoglm.prefill", "autoglm.decode"}
    assert all(phase.trace_id == span.trace_id for phase in phases)
    assert by_name["autoglm.queue"].end_unix_nano <= by_name["autoglm.prefill"].end_unix_nano
    assert by_name["autoglm.prefill"].end_unix_nano <= by_name["autoglm.decode"].end_unix_nano


async def test_invalid_argument_leaves_span_with_code_and_no_error_status(toy: ToyServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=0)))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    span = await server_span(toy)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.attributes["autoglm.grpc.status_message"] == "max_new_tokens: must be at least 1"
    assert span.attributes["autoglm.rejection_reason"] == "invalid_argument"
    assert span.status_code == STATUS_UNSET  # the caller's fault, not the server's


async def test_call_refused_by_a_later_interceptor_still_leaves_a_span(toy: ToyServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=2), metadata=(("reject", "yes"),)))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    span = await server_span(toy)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_unexpected_exception_is_unknown_with_error_status_and_exception_event(toy: ToyServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(toy.stub.Generate(pb.GenerateRequest(text="boom", max_new_tokens=2)))
    assert caught.value.code() is grpc.StatusCode.UNKNOWN
    span = await server_span(toy)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    assert span.is_error
    exception = span.event("exception")
    assert exception is not None
    assert exception.attributes["exception.type"] == "RuntimeError"


async def test_client_cancel_ends_span_cancelled_and_closes_stream_in_its_own_task(
    toy: ToyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=200, priority=20))
    first = await call.read()
    assert first.WhichOneof("kind") == "started"
    await call.read()
    call.cancel()
    await asyncio.wait_for(toy.servicer.cleanup_done.wait(), 10)

    span = await server_span(toy)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert span.status_code == STATUS_UNSET
    assert span.attributes["autoglm.rejection_reason"] == "cancelled"
    # The generator was closed by the RPC's task (grpc names it HandleExceptions[...]), not by a
    # garbage-collector finalizer in some other task.
    assert toy.servicer.cleanups == ["HandleExceptions[/autoglm.v1.GenerationService/Generate]"]
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or "detach" in r.getMessage().lower()]
    assert problems == []


async def test_deadline_exceeded_is_reported_as_such(toy: ToyServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=100, priority=50), timeout=0.3))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(toy.servicer.cleanup_done.wait(), 10)
    span = await server_span(toy)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert span.is_error


async def test_tracing_off_without_endpoint() -> None:
    from autoglm_server.observability.settings import ObservabilitySettings
    from autoglm_server.observability.tracing import setup_tracing

    runtime = setup_tracing(ObservabilitySettings(), {}, environ={})
    assert not runtime.enabled
    runtime.shutdown()
    on = setup_tracing(ObservabilitySettings(), {}, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert on.enabled
    assert on.endpoint == "http://127.0.0.1:9"
    on.shutdown(timeout_s=0.1)
    off = setup_tracing(
        ObservabilitySettings(), {}, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1", "OTEL_SDK_DISABLED": "true"}
    )
    assert not off.enabled
