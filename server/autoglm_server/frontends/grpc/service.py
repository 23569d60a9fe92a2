"""The gRPC front door: GenerationService over the shared serving pipeline. Thin, no torch.

Each method turns its protobuf request into specs (convert.py), hands them to the pipeline
(serving/pipeline.py: admission, validation, rendering, engine, observability, drain) and relays
the deltas back as protobuf; an AutoglmError becomes its gRPC status (status.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server import names
from autoglm_server.engine.types import ANONYMOUS_TENANT, GenerationDelta
from autoglm_server.errors import AutoglmError
from autoglm_server.frontends.grpc import convert, status
from autoglm_server.frontends.grpc.health import HealthReporter
from autoglm_server.serving import session
from autoglm_server.serving.pipeline import Call, Generation, ServingPipeline
from autoglm_server.serving.validate import CallContext

# Who made the call (tenant used for fair share); the auth layer supplies it once enabled.
TenantLookup = Callable[[], str]
Response = TypeVar("Response", pb.GenerateResponse, pb.ChatResponse)


def _anonymous() -> str:
    return ANONYMOUS_TENANT


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """Serves autoglm.v1.GenerationService over a ServingPipeline."""

    def __init__(
        self,
        pipeline: ServingPipeline,
        *,
        model_version: str,
        auth_enabled: bool,
        tenant_lookup: TenantLookup = _anonymous,
    ) -> None:
        self._pipeline = pipeline
        self._model_version = model_version
        self._auth_enabled = auth_enabled
        self._tenant_lookup = tenant_lookup

    def _call(self, method: str, context: grpc.aio.ServicerContext) -> Call:
        call = CallContext(tenant=self._tenant_lookup(), deadline=_deadline(context), session_id=_session_id(context))
        return Call(method=method, protocol="grpc", names=convert.GRPC_FIELDS, context=call)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        call = self._call("Generate", context)

        async def start() -> Generation:
            prompt = self._pipeline.converted(call, lambda: convert.prompt_spec(request))
            return await self._pipeline.generate(prompt, convert.options_spec(request), call)

        async for message in self._stream(start, context, pb.GenerateResponse):
            yield message

    async def Chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ChatResponse]:
        call = self._call("Chat", context)

        async def start() -> Generation:
            messages = self._pipeline.converted(call, lambda: convert.message_specs(request))
            return await self._pipeline.chat(messages, convert.options_spec(request), call)

        async for message in self._stream(start, context, pb.ChatResponse):
            yield message

    async def _stream(
        self,
        start: Callable[[], Awaitable[Generation]],
        context: grpc.aio.ServicerContext,
        response: type[Response],
    ) -> AsyncIterator[Response]:
        try:
            generation = await start()
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
            return
        except Exception as error:
            await status.abort(context, status.internal_status(error))
            return
        try:
            yield response(started=convert.started(generation.request, self._pipeline.model))
            async for delta in generation:
                for message in _messages(delta, response):
                    yield message
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await status.abort(context, status.internal_status(error))
        finally:
            await generation.close()

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        try:
            ids = await self._pipeline.tokenize(request.text, request.add_special_tokens, convert.GRPC_FIELDS)
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
            raise  # unreachable: abort raises
        except Exception as error:
            await status.abort(context, status.internal_status(error))
            raise  # unreachable: abort raises
        return pb.TokenizeResponse(token_ids=ids, count=len(ids))

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        pipeline = self._pipeline
        try:
            pipeline.state.check_admission()
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
        return convert.model_info_message(
            pipeline.model,
            model_version=self._model_version,
            max_new_tokens_limit=pipeline.limits.max_new_tokens_limit,
            auth_enabled=self._auth_enabled,
            max_images_per_request=pipeline.image_limits.max_images_per_request,
        )


def _messages(delta: GenerationDelta, response: type[Response]) -> list[Response]:
    out = []
    if delta.text or delta.token_ids:
        out.append(response(chunk=convert.chunk(delta)))
    if delta.finished:
        out.append(response(finished=convert.finished(delta)))
    return out


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(float(remaining), 0.0)


def _session_id(context: grpc.aio.ServicerContext) -> str:
    metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
    return session.session_id(metadata.get)


def register(server: grpc.aio.Server, servicer: GenerationServicer, health: HealthReporter) -> None:
    """Put the generation service, grpc.health.v1 and reflection (for grpcurl and the like) on server."""
    pb_grpc.add_GenerationServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection(
        (names.GENERATION_SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )
