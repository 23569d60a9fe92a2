"""The rules every request is checked against, whichever front door it came through.

Every rule names the field (as the caller's front door calls it) and the allowed range, so a
client can fix its request from the message alone. Cheap checks on the options run before any
tokenizing or image decoding; the prompt is checked against the context once its tokens are known.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from autoglm_server.engine.types import (
    ANONYMOUS_TENANT,
    GenerationRequest,
    ImageInput,
    ModelDescription,
    SamplingOptions,
)
from autoglm_server.errors import InvalidRequestError, RequestTooLargeError
from autoglm_server.serving.spec import FieldNames, OptionsSpec, SamplingSpec

MAX_REQUEST_ID_CHARS = 128
MAX_TOP_LOGPROBS = 20
MAX_SEED = 2**64 - 1  # the range of gRPC's uint64 seed, and of torch.Generator.manual_seed
# Temperatures below this are treated as 0 (greedy): sampling there is argmax with overflow risk.
MIN_SAMPLING_TEMPERATURE = 1e-5
# OpenAI's range for presence_penalty and frequency_penalty.
MAX_ABS_PENALTY = 2.0
# A text prompt may hold at most this many UTF-8 bytes per token of context: a cheap bound checked
# before tokenizing, so a huge text is refused without costing the server its tokenization.
MAX_TEXT_BYTES_PER_CONTEXT_TOKEN = 32


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Server-side bounds a request is checked against."""

    max_new_tokens_limit: int
    default_max_new_tokens: int
    max_stop_strings: int
    max_stop_string_bytes: int


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the transport knows about a call: who made it, until when it matters, its session."""

    tenant: str = ANONYMOUS_TENANT
    deadline: float | None = None
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class ValidOptions:
    """Options that passed every rule, waiting for their prompt."""

    request_id: str
    max_new_tokens: int
    sampling: SamplingOptions
    stop_strings: tuple[str, ...]
    stop_token_ids: frozenset[int]
    options: OptionsSpec


def check_options(
    options: OptionsSpec, *, model: ModelDescription, limits: RequestLimits, names: FieldNames
) -> ValidOptions:
    """Validate everything but the prompt."""
    if not 0 <= options.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(
            names("top_logprobs"), f"must be in [0, {MAX_TOP_LOGPROBS}], got {options.top_logprobs}"
        )
    if options.top_logprobs and not options.logprobs:
        raise InvalidRequestError(names("top_logprobs"), f"needs {names('logprobs')}=true")
    stop_ids = check_token_ids("stop_token_ids", options.stop_token_ids, model.vocab_size, names, allow_empty=True)
    return ValidOptions(
        request_id=_request_id(options.request_id, names),
        max_new_tokens=_max_new_tokens(options.max_new_tokens, limits, names),
        sampling=_sampling(options.sampling, names),
        stop_strings=_stop_strings(options.stop, limits, names),
        stop_token_ids=frozenset(stop_ids),
        options=options,
    )


def build_request(
    valid: ValidOptions,
    prompt_ids: list[int] | tuple[int, ...],
    *,
    model: ModelDescription,
    call: CallContext,
    prompt_field: str,
    prompt_text: str = "",
    images: tuple[ImageInput, ...] = (),
) -> GenerationRequest:
    """The engine's request, once the prompt's tokens are known (checked against the context)."""
    check_prompt_fits(len(prompt_ids), model, prompt_field)
    options = valid.options
    return GenerationRequest(
        request_id=valid.request_id,
        prompt_token_ids=tuple(prompt_ids),
        max_new_tokens=valid.max_new_tokens,
        sampling=valid.sampling,
        stop_strings=valid.stop_strings,
        stop_token_ids=valid.stop_token_ids,
        ignore_eos=options.ignore_eos,
        logprobs=options.logprobs,
        top_logprobs=options.top_logprobs,
        priority=options.priority,
        tenant=call.tenant,
        deadline=call.deadline,
        arrival_time=time.monotonic(),
        prompt_text=prompt_text,
        images=images,
        session_id=call.session_id,
    )


def check_prompt_fits(prompt_tokens: int, model: ModelDescription, field: str) -> None:
    if prompt_tokens >= model.max_context_length:
        raise RequestTooLargeError(
            field,
            f"the prompt has {prompt_tokens} tokens; the model's context holds {model.max_context_length}, "
            f"so a prompt may have at most {model.max_context_length - 1}",
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


def check_token_ids(
    neutral: str, ids: Iterable[int], vocab_size: int, names: FieldNames, *, allow_empty: bool
) -> list[int]:
    values = [int(token_id) for token_id in ids]
    if not values and not allow_empty:
        raise InvalidRequestError(names(neutral), "must not be empty")
    for index, token_id in enumerate(values):
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                names.indexed(neutral, index), f"token id {token_id} is outside the vocabulary [0, {vocab_size})"
            )
    return values


def _request_id(value: str, names: FieldNames) -> str:
    if not value:
        return uuid.uuid4().hex
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(names("request_id"), f"must be at most {MAX_REQUEST_ID_CHARS} characters")
    if not value.isprintable():
        raise InvalidRequestError(names("request_id"), "must contain printable characters only")
    return value


def _max_new_tokens(value: int | None, limits: RequestLimits, names: FieldNames) -> int:
    if value is None:
        return min(limits.default_max_new_tokens, limits.max_new_tokens_limit)
    if not 1 <= value <= limits.max_new_tokens_limit:
        raise InvalidRequestError(
            names("max_new_tokens"), f"must be in [1, {limits.max_new_tokens_limit}], got {value}"
        )
    return value


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _sampling(params: SamplingSpec, names: FieldNames) -> SamplingOptions:
    temperature = params.temperature if params.temperature is not None else 0.0
    if not _finite(temperature) or temperature < 0:
        raise InvalidRequestError(names("temperature"), f"must be a finite number >= 0, got {temperature}")
    if temperature < MIN_SAMPLING_TEMPERATURE:
        temperature = 0.0
    top_p = params.top_p if params.top_p is not None else 1.0
    if not _finite(top_p) or not 0 < top_p <= 1:
        raise InvalidRequestError(names("top_p"), f"must be in (0, 1], got {top_p}")
    top_k = params.top_k if params.top_k is not None else 0
    if top_k < 0:
        raise InvalidRequestError(names("top_k"), f"must be >= 0 (0 means no cut), got {top_k}")
    penalty = params.repetition_penalty if params.repetition_penalty is not None else 1.0
    if not _finite(penalty) or penalty <= 0:
        raise InvalidRequestError(
            names("repetition_penalty"), f"must be a finite number > 0 (1 means none), got {penalty}"
        )
    presence = _openai_penalty("presence_penalty", params.presence_penalty, names)
    frequency = _openai_penalty("frequency_penalty", params.frequency_penalty, names)
    # gRPC's uint64 bounds the seed; a JSON integer is unbounded, and one the engine's generator
    # cannot take would fail in the engine thread, not in this request.
    if params.seed is not None and not 0 <= params.seed <= MAX_SEED:
        raise InvalidRequestError(names("seed"), f"must be in [0, 2**64 - 1], got {params.seed}")
    return SamplingOptions(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=penalty,
        presence_penalty=presence,
        frequency_penalty=frequency,
        seed=params.seed,
    )


def _openai_penalty(neutral: str, value: float | None, names: FieldNames) -> float:
    if value is None:
        return 0.0
    if not _finite(value) or abs(value) > MAX_ABS_PENALTY:
        raise InvalidRequestError(
            names(neutral), f"must be in [-{MAX_ABS_PENALTY:g}, {MAX_ABS_PENALTY:g}], got {value}"
        )
    return value


def _stop_strings(stops: tuple[str, ...], limits: RequestLimits, names: FieldNames) -> tuple[str, ...]:
    if len(stops) > limits.max_stop_strings:
        raise InvalidRequestError(names("stop"), f"at most {limits.max_stop_strings} stop strings, got {len(stops)}")
    for index, stop in enumerate(stops):
        if not stop:
            raise InvalidRequestError(names.indexed("stop", index), "must not be empty")
        if len(stop.encode("utf-8")) > limits.max_stop_string_bytes:
            raise InvalidRequestError(
                names.indexed("stop", index), f"must be at most {limits.max_stop_string_bytes} bytes of UTF-8"
            )
    return stops
