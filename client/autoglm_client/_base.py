"""What the sync and the asyncio client share, so each of them is only a transport wrapper.

`ClientBase` opens the connection, resolves deadlines and sessions, and turns the arguments of
`generate()` and `chat()` into one GenerateRequest or ChatRequest; a subclass supplies the
channel (blocking or grpc.aio) and says how a request becomes a stream of events (a generator or
an async generator). The public signatures live here
once, so the two clients cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoglm_client import _convert
from autoglm_client._metadata import Metadata, check_session_id
from autoglm_client.channel import DEFAULT_TARGET, Connection, RetryPolicy, TlsConfig
from autoglm_client.errors import InternalError, from_rpc_error
from autoglm_client.messages import Message, as_messages
from autoglm_client.tokens import TokenProvider
from autoglm_client.types import HealthStatus
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc

# "Use the client's default": a sentinel, because None already means "no deadline" / "no session".
UNSET: Any = object()

ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)
StreamT = TypeVar("StreamT")


def incomplete_stream() -> InternalError:
    """The error for a stream that ended (without a gRPC error) before its Finished message."""
    return InternalError(grpc.StatusCode.INTERNAL, "the stream ended without a finished message")


def health_status(value: int) -> HealthStatus:
    """A HealthCheckResponse status as HealthStatus; a value newer than this SDK reads as UNKNOWN."""
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(value)
    return HealthStatus(name) if name in HealthStatus.__members__ else HealthStatus.UNKNOWN


def health_failure(exc: grpc.RpcError) -> HealthStatus:
    """A failed health check: NOT_FOUND means the server does not know the service, anything else raises."""
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return HealthStatus.SERVICE_UNKNOWN
    raise from_rpc_error(exc) from exc


class ClientBase(Generic[ChannelT, StreamT]):
    """Connection, deadlines and request building; see Client and AsyncClient for the transports."""

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
        session_id: str | None = None,
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
        self._session_id = check_session_id(session_id)
        self._channel: ChannelT = self._open_channel(self._connection)
        self._stub = generation_pb2_grpc.GenerationServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def target(self) -> str:
        return self._connection.target

    @property
    def session_id(self) -> str | None:
        """The session every call of this client names, unless a call names its own."""
        return self._session_id

    def _open_channel(self, connection: Connection) -> ChannelT:
        raise NotImplementedError

    def _stream(
        self,
        method: Callable[..., Any],
        request: pb.GenerateRequest | pb.ChatRequest,
        deadline_s: float | None,
        metadata: Metadata | None,
    ) -> StreamT:
        """Start a streaming call (Generate or Chat) and return its events; the subclass's transport."""
        raise NotImplementedError

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is UNSET else timeout

    def _metadata(self, session_id: str | None = UNSET) -> Metadata | None:
        """One call's metadata; UNSET takes the client's session, None or "" sends none."""
        session = self._session_id if session_id is UNSET else check_session_id(session_id)
        return self._connection.metadata(session)

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        request_id: str = "",
        priority: int = 0,
        logprobs: bool = False,
        top_logprobs: int = 0,
        ignore_eos: bool = False,
        timeout: float | None = UNSET,
        session_id: str | None = UNSET,
    ) -> StreamT:
        """Stream one Started, then Chunks, then one Finished. Stopping early cancels the call.

        Unset sampling arguments take the server's defaults; the server checks every range and
        answers INVALID_ARGUMENT with the reason. `presence_penalty` and `frequency_penalty` are
        OpenAI's, in [-2, 2]. `session_id` overrides the client's session for this call (None: no
        session).
        """
        options = _convert.GenerateOptions(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
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
        return self._stream(self._stub.Generate, request, self._deadline(timeout), self._metadata(session_id))

    def chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        request_id: str = "",
        priority: int = 0,
        logprobs: bool = False,
        top_logprobs: int = 0,
        ignore_eos: bool = False,
        timeout: float | None = UNSET,
        session_id: str | None = UNSET,
    ) -> StreamT:
        """Stream the assistant's reply to `messages` as `generate()` streams text.

        `messages` are Message values or OpenAI-style dicts (see autoglm_client.messages); each is
        checked before anything is sent, and a bad one raises ValueError or TypeError naming it.
        The server renders them with the model's chat template; the other arguments are
        generate()'s.
        """
        checked = as_messages(messages)
        options = _convert.GenerateOptions(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            stop=stop,
            stop_token_ids=stop_token_ids,
            request_id=request_id,
            priority=priority,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            ignore_eos=ignore_eos,
        )
        request = _convert.chat_request(checked, options)
        return self._stream(self._stub.Chat, request, self._deadline(timeout), self._metadata(session_id))
