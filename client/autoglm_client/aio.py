"""The asyncio client (grpc.aio): the same API as Client, with awaitables and async iterators."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc
from grpc_health.v1 import health_pb2

from autoglm_client import _convert
from autoglm_client._base import UNSET, ClientBase, health_failure, health_status, incomplete_stream
from autoglm_client._metadata import Metadata
from autoglm_client.channel import Connection
from autoglm_client.errors import from_rpc_error
from autoglm_client.messages import Message
from autoglm_client.types import Finished, GenerateEvent, GenerationResult, HealthStatus, ModelInfo
from autoglm_client.v1 import generation_pb2 as pb


class AsyncClient(ClientBase[grpc.aio.Channel, AsyncGenerator[GenerateEvent, None]]):
    """A grpc.aio client of one autoglm daemon; use it from one event loop and `await close()`.

    Arguments as for Client. To stop a stream early and cancel the call at once, iterate it
    inside `contextlib.aclosing(client.generate(...))`; otherwise the cancel waits for the
    generator to be garbage-collected.
    """

    def _open_channel(self, connection: Connection) -> grpc.aio.Channel:
        return connection.aio_channel()

    async def _stream(
        self,
        method: Callable[..., Any],
        request: pb.GenerateRequest | pb.ChatRequest,
        deadline_s: float | None,
        metadata: Metadata | None,
    ) -> AsyncGenerator[GenerateEvent, None]:
        call = method(request, timeout=deadline_s, metadata=metadata)
        finished = False
        try:
            async for message in call:
                item = _convert.event(message)
                if item is not None:
                    finished = isinstance(item, Finished)
                    yield item
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()  # a no-op once the stream is done; stops generation when the caller quits early
        if not finished:
            raise incomplete_stream()

    async def _unary(self, method: Callable[..., Any], request: Any, deadline_s: float | None) -> Any:
        """One unary call with the client's metadata; gRPC errors become AutoglmError."""
        try:
            return await method(request, timeout=deadline_s, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    async def generate_text(
        self, prompt: str | Sequence[int], **kwargs: Unpack[_convert.GenerateKwargs]
    ) -> GenerationResult:
        """Generate and return the whole output (same arguments as `generate`)."""
        return await self._collect(self.generate(prompt, **kwargs))

    async def chat_text(
        self, messages: Sequence[Message | Mapping[str, Any]], **kwargs: Unpack[_convert.GenerateKwargs]
    ) -> GenerationResult:
        """Chat and return the whole reply (same arguments as `chat`)."""
        return await self._collect(self.chat(messages, **kwargs))

    @staticmethod
    async def _collect(events: AsyncGenerator[GenerateEvent, None]) -> GenerationResult:
        builder = _convert.ResultBuilder()
        async with contextlib.aclosing(events):  # an error mid-stream cancels the call at once
            async for item in events:
                builder.add(item)
        result = builder.result()
        if result is None:
            raise incomplete_stream()
        return result

    async def tokenize(
        self,
        text: str,
        *,
        add_special_tokens: bool = False,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the gRPC deadline
    ) -> tuple[int, ...]:
        """The model's token ids for `text`."""
        request = pb.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)
        return tuple((await self._unary(self._stub.Tokenize, request, self._deadline(timeout))).token_ids)

    async def model_info(self, *, timeout: float | None = UNSET) -> ModelInfo:  # noqa: ASYNC109
        """What the daemon serves and how."""
        response = await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), self._deadline(timeout))
        return _convert.model_info(response.model_info)

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the gRPC deadline
    ) -> HealthStatus:
        """grpc.health.v1 status: "" is liveness, "autoglm.v1.GenerationService" readiness."""
        # No token metadata: health bypasses auth, and a probe must work without credentials.
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            return health_failure(exc)
        return health_status(response.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
