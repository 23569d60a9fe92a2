"""The synchronous client: a thin, typed wrapper over the generated GenerationService stub."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
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


class Client(ClientBase[grpc.Channel, Generator[GenerateEvent, None, None]]):
    """A blocking client of one autoglm daemon. Thread-safe; close it (or use `with`) when done.

    `timeout` is the default deadline of every call in seconds (None: no deadline); each method's
    own `timeout` overrides it. `tls=True` uses the system's trust store; a TlsConfig sets a CA,
    a client certificate (mTLS) and a server name. `token_provider` returns the bearer token for
    each call. UNAVAILABLE is retried by gRPC as `retry` says (None: never). `session_id` names
    the session of every call (the `x-autoglm-session` metadata that a mesh routes on, so an
    agent's steps reach the replica holding its prefix cache); `generate()` and `chat()` may name
    their own. Closing the iterator of `generate()` or `chat()` early cancels the call.
    """

    def _open_channel(self, connection: Connection) -> grpc.Channel:
        return connection.sync_channel()

    def _stream(
        self,
        method: Callable[..., Any],
        request: pb.GenerateRequest | pb.ChatRequest,
        deadline_s: float | None,
        metadata: Metadata | None,
    ) -> Generator[GenerateEvent, None, None]:
        # Started here, not in the generator: a call that cannot start (a failing token provider)
        # raises from generate() itself rather than at the first next().
        return self._events(method(request, timeout=deadline_s, metadata=metadata))

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

    def _unary(self, method: Callable[..., Any], request: Any, deadline_s: float | None) -> Any:
        """One unary call with the client's metadata; gRPC errors become AutoglmError."""
        try:
            return method(request, timeout=deadline_s, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def generate_text(self, prompt: str | Sequence[int], **kwargs: Unpack[_convert.GenerateKwargs]) -> GenerationResult:
        """Generate and return the whole output (same arguments as `generate`)."""
        return self._collect(self.generate(prompt, **kwargs))

    def chat_text(
        self, messages: Sequence[Message | Mapping[str, Any]], **kwargs: Unpack[_convert.GenerateKwargs]
    ) -> GenerationResult:
        """Chat and return the whole reply (same arguments as `chat`)."""
        return self._collect(self.chat(messages, **kwargs))

    @staticmethod
    def _collect(events: Generator[GenerateEvent, None, None]) -> GenerationResult:
        builder = _convert.ResultBuilder()
        for item in events:
            builder.add(item)
        result = builder.result()
        if result is None:
            raise incomplete_stream()
        return result

    def tokenize(
        self, text: str, *, add_special_tokens: bool = False, timeout: float | None = UNSET
    ) -> tuple[int, ...]:
        """The model's token ids for `text`."""
        request = pb.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)
        return tuple(self._unary(self._stub.Tokenize, request, self._deadline(timeout)).token_ids)

    def model_info(self, *, timeout: float | None = UNSET) -> ModelInfo:
        """What the daemon serves and how."""
        response = self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), self._deadline(timeout))
        return _convert.model_info(response.model_info)

    def health(self, service: str = "", *, timeout: float | None = UNSET) -> HealthStatus:
        """grpc.health.v1 status: "" is liveness, "autoglm.v1.GenerationService" readiness."""
        # No token metadata: health bypasses auth, and a probe must work without credentials.
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            return health_failure(exc)
        return health_status(response.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
