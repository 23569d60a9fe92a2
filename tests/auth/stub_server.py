"""A small grpc.aio server with the real GenerationService stubs, the health service and the auth
interceptor: the servicer echoes the verified Principal so tests see what the handler saw."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server.auth.context import current_principal


def _who() -> str:
    principal = current_principal()
    if principal is None:
        return "anonymous"
    return f"{principal.subject}|{principal.tenant}|{' '.join(sorted(principal.scopes))}"


class EchoPrincipalServicer(pb_grpc.GenerationServiceServicer):
    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(model_info=pb.ModelInfo(model_id=_who()))

    async def Tokenize(self, request: pb.TokenizeRequest, context: Any) -> pb.TokenizeResponse:
        return pb.TokenizeResponse(token_ids=[1, 2], count=2)

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> AsyncIterator[pb.GenerateResponse]:
        yield pb.GenerateResponse(started=pb.GenerateStarted(request_id="r1", model_id=_who()))
        yield pb.GenerateResponse(chunk=pb.TokenChunk(text="hi", token_ids=[7]))
        # The principal is still visible after the first yield: the contextvar lives in the RPC's task.
        yield pb.GenerateResponse(chunk=pb.TokenChunk(text=_who()))
        yield pb.GenerateResponse(finished=pb.GenerateFinished(finish_reason=pb.FINISH_REASON_LENGTH))


@dataclass
class StubServer:
    server: grpc.aio.Server
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def stub_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[StubServer]:
    # The daemon's metadata limit (16 KiB), so an oversized JWT reaches the interceptor.
    server = grpc.aio.server(interceptors=list(interceptors), options=[("grpc.max_metadata_size", 16 * 1024)])
    pb_grpc.add_GenerationServiceServicer_to_server(EchoPrincipalServicer(), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    try:
        yield StubServer(server, port)
    finally:
        await server.stop(None)
