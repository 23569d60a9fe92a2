"""The asyncio client (grpc.aio): the same API as Client, with awaitables and async iterators."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoglm_client import _convert
from autoglm_client.channel import DEFAULT_TARGET, Connection, RetryPolicy, TlsConfig
from autoglm_client.client import health_status, incomplete_stream
from autoglm_client.errors import from_rpc_error
from autoglm_client.tokens import TokenProvider
from autoglm_client.types import Finished, GenerateEvent, GenerationResult, HealthStatus, ModelInfo
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc

_UNSET: Any = object()


class AsyncClient:
    """A grpc.aio client of one autoglm daemon; use it from one event loop and `await close()`.

    Arguments as for Client. To stop a stream early and cancel the call at once, iterate it
    inside `contextlib.aclosing(client.generate(...))`; otherwise the cancel waits for the
    generator to be garbage-collected.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TlsConfig | bool | None = None,
        token_provider: TokenProvider | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, safe to share
        options: Sequence[tuple[str, Any]] = (),
        propagate_trace: bool = True,
    ) -> None:
        self._connection = Connection(
            target,
            tls=tls,
            token_provider=token_provider,
            retry=retry,
            options=options,
            propagate_trace=propagate_trace,
        )
        self._timeout = timeout
        self._channel = self._connection.aio_channel()
        self._stub = generation_pb2_grpc.GenerationServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def target(self) -> str:
        return self._connection.target

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is _UNSET else timeout

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        request_id: str = "",
        priority: int = 0,
        logprobs: bool = False,
        top_logprobs: int = 0,
        ignore_eos: bool = False,
        timeout: float | None = _UNSET,
    ) -> AsyncGenerator[GenerateEvent, None]:
        """Stream one Started, then Chunks, then one Finished."""
        options = _convert.GenerateOptions(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=stop,
            stop_token_ids=stop_token_ids,
            request_id=request_id,
            priority=priority,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            ignore_eos=ignore_eos,
        )
        request = _convert.generate_request(prompt, options)
        return self._events(request, self._deadline(timeout))

    async def _events(
        self, request: pb.GenerateRequest, deadline_s: float | None
    ) -> AsyncGenerator[GenerateEvent, None]:
        call = self._stub.Generate(request, timeout=deadline_s, metadata=self._connection.metadata())
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
            call.cancel()
        if not finished:
            raise incomplete_stream()

    async def generate_text(
        self, prompt: str | Sequence[int], **kwargs: Unpack[_convert.GenerateKwargs]
    ) -> GenerationResult:
        """Generate and return the whole output (same arguments as `generate`)."""
        builder = _convert.ResultBuilder()
        async for item in self.generate(prompt, **kwargs):
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
        timeout: float | None = _UNSET,  # noqa: ASYNC109 - the gRPC deadline
    ) -> tuple[int, ...]:
        """The model's token ids for `text`."""
        request = pb.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)
        try:
            response = await self._stub.Tokenize(
                request, timeout=self._deadline(timeout), metadata=self._connection.metadata()
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return tuple(response.token_ids)

    async def model_info(self, *, timeout: float | None = _UNSET) -> ModelInfo:  # noqa: ASYNC109
        """What the daemon serves and how."""
        try:
            response = await self._stub.GetModelInfo(
                pb.GetModelInfoRequest(),
                timeout=self._deadline(timeout),
                metadata=self._connection.metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return _convert.model_info(response.model_info)

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = _UNSET,  # noqa: ASYNC109 - the gRPC deadline
    ) -> HealthStatus:
        """grpc.health.v1 status: "" is liveness, "autoglm.v1.GenerationService" readiness."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise from_rpc_error(exc) from exc
        return health_status(response.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
