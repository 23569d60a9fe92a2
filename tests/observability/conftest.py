"""A small grpc.aio server with the real GenerationService stubs and the observability interceptors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server.engine.types import (
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    SamplingOptions,
    Usage,
)
from autoglm_server.observability.access_log import AccessLogInterceptor
from autoglm_server.observability.grpc_metrics import MetricsInterceptor
from autoglm_server.observability.grpc_tracing import TracingInterceptor
from autoglm_server.observability.hooks import ObserverFactory
from autoglm_server.observability.metrics import Metrics
from autoglm_server.observability.observer import make_observer_factory
from autoglm_server.observability.settings import ObservabilitySettings
from autoglm_server.observability.tracing import TracingRuntime, setup_tracing
from tests.helpers.otlp_receiver import OtlpReceiver, otlp_receiver

MODEL = "builtin:toy"
PROMPT = (5, 6, 7)


class ToyServicer(pb_grpc.GenerationServiceServicer):  # type: ignore[misc]
    """Streams `max_new_tokens` chunks, `priority` ms apart, reporting to the observer like the real one.

    text "boom" raises an unexpected error; max_new_tokens 0 is refused with INVALID_ARGUMENT.
    """

    def __init__(self, observers: ObserverFactory) -> None:
        self._observers = observers
        self.cleanups: list[str] = []
        self.cleanup_done = asyncio.Event()

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        observer = self._observers("Generate")
        if request.text == "boom":
            raise RuntimeError("the toy engine exploded")
        if request.max_new_tokens <= 0:
            observer.on_rejected("invalid_argument")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens: must be at least 1")
        domain = GenerationRequest(
            request_id=request.request_id or "toy-1",
            prompt_token_ids=PROMPT,
            max_new_tokens=request.max_new_tokens,
            sampling=SamplingOptions(temperature=0.5),
            tenant="tenant-a",
        )
        observer.on_admitted(domain)
        try:
            yield pb.GenerateResponse(started=pb.GenerateStarted(request_id=domain.request_id, prompt_tokens=3))
            for index in range(request.max_new_tokens):
                await asyncio.sleep(request.priority / 1000)
                delta = GenerationDelta(text="a", token_ids=[index])
                observer.on_tokens(delta)
                yield pb.GenerateResponse(chunk=pb.TokenChunk(text="a", token_ids=[index]))
            usage = Usage(len(PROMPT), request.max_new_tokens, queue_time_s=0.001, time_to_first_token_s=0.002)
            observer.on_finished(GenerationDelta(finish_reason=FinishReason.LENGTH, usage=usage))
            yield pb.GenerateResponse(finished=pb.GenerateFinished(finish_reason=pb.FINISH_REASON_LENGTH))
        except asyncio.CancelledError:
            observer.on_rejected("cancelled")
            raise
        finally:
            # Which task closes the generator: it must be the RPC's own, not a GC finalizer's.
            task = asyncio.current_task()
            self.cleanups.append(task.get_name() if task is not None else "")
            self.cleanup_done.set()

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        return pb.TokenizeResponse(token_ids=[1, 2], count=2)


class RejectAll(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Stands in for the auth interceptor: refuses calls whose metadata says so."""

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if ("reject", "yes") not in tuple(details.invocation_metadata or ()):
            return await continuation(details)

        async def refuse(request, context):  # type: ignore[no-untyped-def]
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")

        handler = await continuation(details)
        return grpc.unary_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class ToyServer:
    stub: pb_grpc.GenerationServiceStub
    servicer: ToyServicer
    tracing: TracingRuntime
    metrics: Metrics
    receiver: OtlpReceiver
    channel: grpc.aio.Channel
    port: int
    extra: dict[str, object] = field(default_factory=dict)

    def flush(self) -> None:
        assert self.tracing.provider is not None
        assert self.tracing.provider.force_flush(10_000)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
async def toy(receiver: OtlpReceiver) -> AsyncIterator[ToyServer]:
    settings = ObservabilitySettings(otlp_endpoint=receiver.endpoint)
    tracing = setup_tracing(settings, {"service.version": "test", "autoglm.model.version": "v-test"}, environ={})
    metrics = Metrics(model=MODEL, version="v-test", revision="abc")
    servicer = ToyServicer(make_observer_factory(metrics, tracing.tracer, model=MODEL))
    server = grpc.aio.server(
        interceptors=[
            TracingInterceptor(tracing.tracer),
            MetricsInterceptor(metrics),
            AccessLogInterceptor(),
            RejectAll(),
        ]
    )
    pb_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ToyServer(pb_grpc.GenerationServiceStub(channel), servicer, tracing, metrics, receiver, channel, port)
    finally:
        await channel.close()
        await server.stop(None)
        tracing.shutdown()
