"""The synchronous client: a thin, typed wrapper over the generated GenerationService stub."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoglm_client import _convert
from autoglm_client.channel import DEFAULT_TARGET, Connection, RetryPolicy, TlsConfig
from autoglm_client.errors import InternalError, from_rpc_error
from autoglm_client.tokens import TokenProvider
from autoglm_client.types import Finished, GenerateEvent, GenerationResult, HealthStatus, ModelInfo
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc

_UNSET: Any = object()


def incomplete_stream() -> InternalError:
    return InternalError(grpc.StatusCode.INTERNAL, "the stream ended without a finished message")


def health_status(value: int) -> HealthStatus:
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(value)
    return HealthStatus(name) if name in HealthStatus.__members__ else HealthStatus.UNKNOWN


class Client:
    """A blocking client of one autoglm daemon. Thread-safe; close it (or use `with`) when done.

    `timeout` is the default deadline of every call in seconds (None: no deadline); each method's
    own `timeout` overrides it. `tls=True` uses the system's trust store; a TlsConfig sets a CA,
    a client certificate (mTLS) and a server name. `token_provider` returns the bearer token for
    each call. UNAVAILABLE is retried by gRPC as `retry` says (None: never).
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
        self._channel = self._connection.sync_channel()
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
    ) -> Generator[GenerateEvent, None, None]:
        """Stream one Started, then Chunks, then one Finished. Closing the iterator early cancels the call."""
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
        call = self._stub.Generate(request, timeout=self._deadline(timeout), metadata=self._connection.metadata())
        return self._events(call)

    @staticmethod
    def _events(call: Any) -> Generator[GenerateEvent, None, None]:
        finished = False
        try:
            for message in call:
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

    def generate_text(self, prompt: str | Sequence[int], **kwargs: Unpack[_convert.GenerateKwargs]) -> GenerationResult:
        """Generate and return the whole output (same arguments as `generate`)."""
        builder = _convert.ResultBuilder()
        for item in self.generate(prompt, **kwargs):
            builder.add(item)
        result = builder.result()
        if result is None:
            raise incomplete_stream()
        return result

    def tokenize(
        self, text: str, *, add_special_tokens: bool = False, timeout: float | None = _UNSET
    ) -> tuple[int, ...]:
        """The model's token ids for `text`."""
        request = pb.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)
        try:
            response = self._stub.Tokenize(
                request, timeout=self._deadline(timeout), metadata=self._connection.metadata()
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return tuple(response.token_ids)

    def model_info(self, *, timeout: float | None = _UNSET) -> ModelInfo:
        """What the daemon serves and how."""
        try:
            response = self._stub.GetModelInfo(
                pb.GetModelInfoRequest(),
                timeout=self._deadline(timeout),
                metadata=self._connection.metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return _convert.model_info(response.model_info)

    def health(self, service: str = "", *, timeout: float | None = _UNSET) -> HealthStatus:
        """grpc.health.v1 status: "" is liveness, "autoglm.v1.GenerationService" readiness."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise from_rpc_error(exc) from exc
        return health_status(response.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
