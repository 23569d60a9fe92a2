"""The only place in the SDK that turns arguments into protobuf messages and messages into value types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from autoglm_client.messages import ImagePart, Message, Role, TextPart
from autoglm_client.types import (
    Chunk,
    Finished,
    FinishReason,
    GenerateEvent,
    GenerationResult,
    ModelInfo,
    Started,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from autoglm_client.v1 import generation_pb2 as pb

_FINISH_PREFIX = "FINISH_REASON_"


@dataclass(frozen=True)
class GenerateOptions:
    """Everything `generate()` and `chat()` put into the request (all but the prompt and call options)."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    request_id: str = ""
    priority: int = 0
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False


class GenerateKwargs(TypedDict, total=False):
    """The keyword arguments of `generate()` and `chat()`, so the `*_text()` methods take them typed."""

    max_new_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    repetition_penalty: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    seed: int | None
    stop: Sequence[str]
    stop_token_ids: Sequence[int]
    request_id: str
    priority: int
    logprobs: bool
    top_logprobs: int
    ignore_eos: bool
    timeout: float | None
    session_id: str | None


def generate_request(prompt: str | Sequence[int], options: GenerateOptions) -> pb.GenerateRequest:
    """Build a GenerateRequest; the server validates ranges and answers INVALID_ARGUMENT."""
    if isinstance(prompt, bytes | bytearray):
        raise TypeError("prompt must be str or a sequence of token ids, not bytes")
    request = pb.GenerateRequest()
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(int(i) for i in prompt)
        request.token_ids.SetInParent()  # an empty id list is still "ids given": the server says why it is bad
    _fill_common(request, options)
    return request


def chat_request(messages: Sequence[Message], options: GenerateOptions) -> pb.ChatRequest:
    """Build a ChatRequest from checked messages; the server checks roles, order and limits."""
    request = pb.ChatRequest(messages=[_chat_message(m) for m in messages])
    _fill_common(request, options)
    return request


def _fill_common(request: pb.GenerateRequest | pb.ChatRequest, options: GenerateOptions) -> None:
    """The fields that GenerateRequest and ChatRequest share, under the same names."""
    request.stop.extend([options.stop] if isinstance(options.stop, str) else list(options.stop))
    request.stop_token_ids.extend(options.stop_token_ids)
    request.request_id = options.request_id
    request.priority = options.priority
    request.logprobs = options.logprobs
    request.top_logprobs = options.top_logprobs
    request.ignore_eos = options.ignore_eos
    if options.max_new_tokens is not None:
        request.max_new_tokens = options.max_new_tokens
    sampling = request.sampling
    for name in _SAMPLING_FIELDS:
        value = getattr(options, name)
        if value is not None:  # unset stays unset: the server's default applies
            setattr(sampling, name, value)


_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


_ROLES = {
    Role.SYSTEM: pb.CHAT_ROLE_SYSTEM,
    Role.USER: pb.CHAT_ROLE_USER,
    Role.ASSISTANT: pb.CHAT_ROLE_ASSISTANT,
    Role.TOOL: pb.CHAT_ROLE_TOOL,
}


def _chat_message(message: Message) -> pb.ChatMessage:
    return pb.ChatMessage(role=_ROLES[message.role], content=[_content_part(part) for part in message.content])


def _content_part(part: TextPart | ImagePart) -> pb.ContentPart:
    if isinstance(part, TextPart):
        return pb.ContentPart(text=part.text)
    if part.data:
        return pb.ContentPart(image=pb.Image(data=part.data, mime_type=part.mime_type))
    return pb.ContentPart(image=pb.Image(url=part.url))


def finish_reason(value: int) -> FinishReason:
    name = pb.FinishReason.Name(value) if value in pb.FinishReason.values() else "FINISH_REASON_UNSPECIFIED"
    return FinishReason(name.removeprefix(_FINISH_PREFIX).lower())


def _usage(message: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        queue_time_ms=message.queue_time_ms,
        time_to_first_token_ms=message.time_to_first_token_ms,
        cached_prompt_tokens=message.cached_prompt_tokens,
    )


def _logprob(message: pb.TokenLogprob) -> TokenLogprob:
    top = tuple(TopLogprob(token_id=t.token_id, logprob=t.logprob) for t in message.top_logprobs)
    return TokenLogprob(token_id=message.token_id, logprob=message.logprob, top_logprobs=top)


def event(message: pb.GenerateResponse | pb.ChatResponse) -> GenerateEvent | None:
    """The value type of one stream message; None for a kind this SDK does not know (a newer server)."""
    kind = message.WhichOneof("kind")
    if kind == "chunk":
        chunk = message.chunk
        return Chunk(
            text=chunk.text,
            token_ids=tuple(chunk.token_ids),
            logprobs=tuple(_logprob(lp) for lp in chunk.logprobs),
        )
    if kind == "started":
        started = message.started
        return Started(request_id=started.request_id, prompt_tokens=started.prompt_tokens, model_id=started.model_id)
    if kind == "finished":
        finished = message.finished
        return Finished(
            finish_reason=finish_reason(finished.finish_reason),
            usage=_usage(finished.usage),
            matched_stop=finished.matched_stop,
        )
    return None


class ResultBuilder:
    """Folds a stream's events into one GenerationResult."""

    def __init__(self) -> None:
        self.request_id = ""
        self._text: list[str] = []
        self._ids: list[int] = []
        self._logprobs: list[TokenLogprob] = []
        self.finished: Finished | None = None

    def add(self, item: GenerateEvent) -> None:
        if isinstance(item, Started):
            self.request_id = item.request_id
        elif isinstance(item, Chunk):
            self._text.append(item.text)
            self._ids.extend(item.token_ids)
            self._logprobs.extend(item.logprobs)
        else:
            self.finished = item

    def result(self) -> GenerationResult | None:
        if self.finished is None:
            return None
        return GenerationResult(
            text="".join(self._text),
            token_ids=tuple(self._ids),
            finish_reason=self.finished.finish_reason,
            usage=self.finished.usage,
            request_id=self.request_id,
            matched_stop=self.finished.matched_stop,
            logprobs=tuple(self._logprobs),
        )


def model_info(message: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        model_id=message.model_id,
        revision=message.revision,
        model_version=message.model_version,
        max_context_length=message.max_context_length,
        eos_token_ids=tuple(message.eos_token_ids),
        dtype=message.dtype,
        device=message.device,
        server_version=message.server_version,
        vocab_size=message.vocab_size,
        architecture=message.architecture,
        max_new_tokens_limit=message.max_new_tokens_limit,
        auth_enabled=message.auth_enabled,
        warnings=tuple(message.warnings),
        supports_chat=message.supports_chat,
        supports_images=message.supports_images,
        max_images_per_request=message.max_images_per_request,
    )
