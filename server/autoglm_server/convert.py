"""The only place that turns protobuf messages into domain types and back.

Validation lives here too: every rule names the field and the allowed range, so a client can fix
its request from the message alone.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server import __version__
from autoglm_server.engine.types import (
    ANONYMOUS_TENANT,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    ModelDescription,
    SamplingOptions,
)
from autoglm_server.errors import InvalidRequestError, RequestTooLargeError

MAX_REQUEST_ID_CHARS = 128
MAX_TOP_LOGPROBS = 20
# Temperatures below this are treated as 0 (greedy).
MIN_SAMPLING_TEMPERATURE = 1e-5
# A text prompt may hold at most this many UTF-8 bytes per token of context: a cheap bound checked
# before tokenizing, so a huge text is refused without costing the server its tokenization.
MAX_TEXT_BYTES_PER_CONTEXT_TOKEN = 32

_FINISH_REASONS = {
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.STOP_TOKEN: pb.FINISH_REASON_STOP_TOKEN,
    FinishReason.EOS_TOKEN: pb.FINISH_REASON_EOS_TOKEN,
    FinishReason.CONTEXT_LENGTH: pb.FINISH_REASON_CONTEXT_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Server-side bounds a GenerateRequest is checked against."""

    max_new_tokens_limit: int
    default_max_new_tokens: int
    max_stop_strings: int
    max_stop_string_bytes: int


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the transport knows about a call: who made it and until when it matters."""

    tenant: str = ANONYMOUS_TENANT
    deadline: float | None = None


Tokenize = Callable[[str], list[int]]


def to_generation_request(
    message: pb.GenerateRequest,
    *,
    model: ModelDescription,
    limits: RequestLimits,
    tokenize: Tokenize,
    call: CallContext,
) -> GenerationRequest:
    """Validate a GenerateRequest and turn it into the engine's GenerationRequest."""
    request_id = _request_id(message.request_id)
    max_new_tokens = _max_new_tokens(message, limits)
    sampling = _sampling(message)
    stop_strings = _stop_strings(message, limits)
    stop_token_ids = _token_ids("stop_token_ids", message.stop_token_ids, model.vocab_size, allow_empty=True)
    if not 0 <= message.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError("top_logprobs", f"must be in [0, {MAX_TOP_LOGPROBS}], got {message.top_logprobs}")
    if message.top_logprobs and not message.logprobs:
        raise InvalidRequestError("top_logprobs", "needs logprobs=true")
    prompt_ids = _prompt_ids(message, model, tokenize)
    return GenerationRequest(
        request_id=request_id,
        prompt_token_ids=tuple(prompt_ids),
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop_strings=stop_strings,
        stop_token_ids=frozenset(stop_token_ids),
        ignore_eos=message.ignore_eos,
        logprobs=message.logprobs,
        top_logprobs=message.top_logprobs,
        priority=message.priority,
        tenant=call.tenant,
        deadline=call.deadline,
        arrival_time=time.monotonic(),
    )


def check_text_size(field: str, text: str, model: ModelDescription) -> None:
    """Refuse a text too long to ever fit the context, before spending time tokenizing it."""
    limit = model.max_context_length * MAX_TEXT_BYTES_PER_CONTEXT_TOKEN
    if len(text) > limit or len(text.encode("utf-8")) > limit:
        raise RequestTooLargeError(
            field,
            f"the text is over {limit} bytes ({MAX_TEXT_BYTES_PER_CONTEXT_TOKEN} per token of the "
            f"model's {model.max_context_length}-token context)",
        )


def _request_id(value: str) -> str:
    if not value:
        return uuid.uuid4().hex
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} characters")
    if not value.isprintable():
        raise InvalidRequestError("request_id", "must contain printable characters only")
    return value


def _max_new_tokens(message: pb.GenerateRequest, limits: RequestLimits) -> int:
    if not message.HasField("max_new_tokens"):
        return min(limits.default_max_new_tokens, limits.max_new_tokens_limit)
    value = message.max_new_tokens
    if not 1 <= value <= limits.max_new_tokens_limit:
        raise InvalidRequestError("max_new_tokens", f"must be in [1, {limits.max_new_tokens_limit}], got {value}")
    return value


def _sampling(message: pb.GenerateRequest) -> SamplingOptions:
    params = message.sampling
    temperature = params.temperature if params.HasField("temperature") else 0.0
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidRequestError("sampling.temperature", f"must be a finite number >= 0, got {temperature}")
    if temperature < MIN_SAMPLING_TEMPERATURE:
        temperature = 0.0  # below this, sampling is argmax with overflow risk: decode greedily
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InvalidRequestError("sampling.top_p", f"must be in (0, 1], got {top_p}")
    top_k = params.top_k if params.HasField("top_k") else 0
    if top_k < 0:
        raise InvalidRequestError("sampling.top_k", f"must be >= 0 (0 means no cut), got {top_k}")
    penalty = params.repetition_penalty if params.HasField("repetition_penalty") else 1.0
    if not math.isfinite(penalty) or penalty <= 0:
        raise InvalidRequestError(
            "sampling.repetition_penalty", f"must be a finite number > 0 (1 means none), got {penalty}"
        )
    seed = params.seed if params.HasField("seed") else None
    return SamplingOptions(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, seed=seed)


def _stop_strings(message: pb.GenerateRequest, limits: RequestLimits) -> tuple[str, ...]:
    stops = tuple(message.stop)
    if len(stops) > limits.max_stop_strings:
        raise InvalidRequestError("stop", f"at most {limits.max_stop_strings} stop strings, got {len(stops)}")
    for index, stop in enumerate(stops):
        if not stop:
            raise InvalidRequestError(f"stop[{index}]", "must not be empty")
        if len(stop.encode("utf-8")) > limits.max_stop_string_bytes:
            raise InvalidRequestError(
                f"stop[{index}]", f"must be at most {limits.max_stop_string_bytes} bytes of UTF-8"
            )
    return stops


def _token_ids(field: str, ids: Iterable[int], vocab_size: int, *, allow_empty: bool) -> list[int]:
    values = [int(token_id) for token_id in ids]
    if not values and not allow_empty:
        raise InvalidRequestError(field, "must not be empty")
    for index, token_id in enumerate(values):
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                f"{field}[{index}]", f"token id {token_id} is outside the vocabulary [0, {vocab_size})"
            )
    return values


def _prompt_ids(message: pb.GenerateRequest, model: ModelDescription, tokenize: Tokenize) -> list[int]:
    kind = message.WhichOneof("prompt")
    if kind is None:
        raise InvalidRequestError("prompt", "set exactly one of text or token_ids")
    if kind == "text":
        if not message.text:
            raise InvalidRequestError("text", "the prompt must not be empty")
        ids = tokenize(message.text)
        field = "text"
    else:
        ids = _token_ids("token_ids.ids", message.token_ids.ids, model.vocab_size, allow_empty=False)
        field = "token_ids"
    if len(ids) >= model.max_context_length:
        raise RequestTooLargeError(
            field,
            f"the prompt has {len(ids)} tokens; the model's context holds {model.max_context_length}, "
            f"so a prompt may have at most {model.max_context_length - 1}",
        )
    return ids


def started_message(request: GenerationRequest, model: ModelDescription) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        started=pb.GenerateStarted(
            request_id=request.request_id,
            prompt_tokens=len(request.prompt_token_ids),
            model_id=model.model_id,
        )
    )


def chunk_message(delta: GenerationDelta) -> pb.GenerateResponse:
    logprobs = [
        pb.TokenLogprob(
            token_id=item.token_id,
            logprob=item.logprob,
            top_logprobs=[pb.TopLogprob(token_id=t, logprob=lp) for t, lp in item.top],
        )
        for item in delta.logprobs
    ]
    return pb.GenerateResponse(chunk=pb.TokenChunk(text=delta.text, token_ids=delta.token_ids, logprobs=logprobs))


def finished_message(delta: GenerationDelta) -> pb.GenerateResponse:
    assert delta.finish_reason is not None
    assert delta.usage is not None
    usage = delta.usage
    ttft = usage.time_to_first_token_s
    return pb.GenerateResponse(
        finished=pb.GenerateFinished(
            finish_reason=_FINISH_REASONS[delta.finish_reason],
            matched_stop=delta.matched_stop,
            usage=pb.Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                queue_time_ms=usage.queue_time_s * 1000.0,
                time_to_first_token_ms=ttft * 1000.0 if ttft is not None else 0.0,
            ),
        )
    )


def model_info_message(
    model: ModelDescription,
    *,
    model_version: str,
    max_new_tokens_limit: int,
    auth_enabled: bool,
) -> pb.GetModelInfoResponse:
    warnings = []
    if model.random_weights:
        warnings.append(f"{model.model_id} has random weights: its text is meaningless")
    if not auth_enabled:
        warnings.append("authentication is disabled: any caller can use this server")
    info = pb.ModelInfo(
        model_id=model.model_id,
        revision=model.revision,
        model_version=model_version,
        max_context_length=model.max_context_length,
        eos_token_ids=list(model.eos_token_ids),
        dtype=model.dtype,
        device=model.device,
        server_version=__version__,
        vocab_size=model.vocab_size,
        architecture=model.architecture,
        max_new_tokens_limit=max_new_tokens_limit,
        auth_enabled=auth_enabled,
        warnings=warnings,
    )
    return pb.GetModelInfoResponse(model_info=info)
