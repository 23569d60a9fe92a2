"""The gRPC front door's conversions: protobuf -> request specs, domain types -> protobuf.

The only module besides the servicer that knows protobuf. The rules a request is checked against
live in serving/validate.py, shared with the HTTP front door; this module names the fields the gRPC
way (`sampling.temperature`) so that an error points at the field the caller set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server import __version__
from autoglm_server.engine.types import FinishReason, GenerationDelta, GenerationRequest, ModelDescription
from autoglm_server.errors import InvalidRequestError
from autoglm_server.serving import validate
from autoglm_server.serving.spec import (
    FieldNames,
    ImageSpec,
    MessageSpec,
    OptionsSpec,
    Prompt,
    SamplingSpec,
    TextPrompt,
    TokenPrompt,
)
from autoglm_server.serving.validate import CallContext, RequestLimits, check_text_size

__all__ = ["CallContext", "RequestLimits", "check_text_size"]

_FINISH_REASONS = {
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.STOP_TOKEN: pb.FINISH_REASON_STOP_TOKEN,
    FinishReason.EOS_TOKEN: pb.FINISH_REASON_EOS_TOKEN,
    FinishReason.CONTEXT_LENGTH: pb.FINISH_REASON_CONTEXT_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
}


# gRPC names of the neutral fields, for error messages (everything else is named as it is).
GRPC_FIELDS = FieldNames(
    {
        "temperature": "sampling.temperature",
        "top_p": "sampling.top_p",
        "top_k": "sampling.top_k",
        "repetition_penalty": "sampling.repetition_penalty",
        "presence_penalty": "sampling.presence_penalty",
        "frequency_penalty": "sampling.frequency_penalty",
        "token_ids": "token_ids.ids",
    }
)

_ROLES = {
    pb.CHAT_ROLE_SYSTEM: "system",
    pb.CHAT_ROLE_USER: "user",
    pb.CHAT_ROLE_ASSISTANT: "assistant",
    pb.CHAT_ROLE_TOOL: "tool",
}

Tokenize = Callable[[str], list[int]]


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def sampling_spec(params: pb.SamplingParams) -> SamplingSpec:
    return SamplingSpec(
        temperature=_optional(params, "temperature"),
        top_p=_optional(params, "top_p"),
        top_k=_optional(params, "top_k"),
        repetition_penalty=_optional(params, "repetition_penalty"),
        presence_penalty=_optional(params, "presence_penalty"),
        frequency_penalty=_optional(params, "frequency_penalty"),
        seed=_optional(params, "seed"),
    )


def options_spec(message: pb.GenerateRequest | pb.ChatRequest) -> OptionsSpec:
    """The options of a GenerateRequest or ChatRequest (the two share their field names)."""
    return OptionsSpec(
        max_new_tokens=_optional(message, "max_new_tokens"),
        sampling=sampling_spec(message.sampling),
        stop=tuple(message.stop),
        stop_token_ids=tuple(message.stop_token_ids),
        request_id=message.request_id,
        priority=message.priority,
        logprobs=message.logprobs,
        top_logprobs=message.top_logprobs,
        ignore_eos=message.ignore_eos,
    )


def prompt_spec(message: pb.GenerateRequest) -> Prompt:
    kind = message.WhichOneof("prompt")
    if kind is None:
        raise InvalidRequestError("prompt", "set exactly one of text or token_ids")
    if kind == "text":
        return TextPrompt(message.text)
    return TokenPrompt(tuple(message.token_ids.ids))


def message_specs(message: pb.ChatRequest) -> list[MessageSpec]:
    specs = []
    for index, item in enumerate(message.messages):
        role = _ROLES.get(item.role)
        if role is None:
            raise InvalidRequestError(
                f"messages[{index}].role",
                "must be CHAT_ROLE_SYSTEM, CHAT_ROLE_USER, CHAT_ROLE_ASSISTANT or CHAT_ROLE_TOOL",
            )
        parts: list[str | ImageSpec] = []
        for part_index, part in enumerate(item.content):
            kind = part.WhichOneof("part")
            if kind == "text":
                parts.append(part.text)
            elif kind == "image":
                parts.append(_image_spec(part.image, f"messages[{index}].content[{part_index}].image"))
            else:
                raise InvalidRequestError(f"messages[{index}].content[{part_index}]", "set text or image")
        specs.append(MessageSpec(role=role, parts=tuple(parts)))
    return specs


def _image_spec(image: pb.Image, field: str) -> ImageSpec:
    source = image.WhichOneof("source")
    if source == "data":
        return ImageSpec(data=image.data, mime_type=image.mime_type)
    if source == "url":
        return ImageSpec(url=image.url, mime_type=image.mime_type)
    raise InvalidRequestError(field, "set data or url")


def to_generation_request(
    message: pb.GenerateRequest,
    *,
    model: ModelDescription,
    limits: RequestLimits,
    tokenize: Tokenize,
    call: CallContext,
) -> GenerationRequest:
    """Validate a GenerateRequest and turn it into the engine's GenerationRequest (synchronously).

    The daemon goes through serving/pipeline.py; this one-call form serves tests and tools.
    """
    valid = validate.check_options(options_spec(message), model=model, limits=limits, names=GRPC_FIELDS)
    prompt = prompt_spec(message)
    if isinstance(prompt, TextPrompt):
        if not prompt.text:
            raise InvalidRequestError("text", "the prompt must not be empty")
        ids, field = tokenize(prompt.text), "text"
    else:
        ids = validate.check_token_ids("token_ids", prompt.token_ids, model.vocab_size, GRPC_FIELDS, allow_empty=False)
        field = "token_ids"
    return validate.build_request(valid, ids, model=model, call=call, prompt_field=field)


def started(request: GenerationRequest, model: ModelDescription) -> pb.GenerateStarted:
    return pb.GenerateStarted(
        request_id=request.request_id,
        prompt_tokens=len(request.prompt_token_ids),
        model_id=model.model_id,
    )


def chunk(delta: GenerationDelta) -> pb.TokenChunk:
    logprobs = [
        pb.TokenLogprob(
            token_id=item.token_id,
            logprob=item.logprob,
            top_logprobs=[pb.TopLogprob(token_id=t, logprob=lp) for t, lp in item.top],
        )
        for item in delta.logprobs
    ]
    return pb.TokenChunk(text=delta.text, token_ids=delta.token_ids, logprobs=logprobs)


def finished(delta: GenerationDelta) -> pb.GenerateFinished:
    assert delta.finish_reason is not None
    assert delta.usage is not None
    usage = delta.usage
    ttft = usage.time_to_first_token_s
    return pb.GenerateFinished(
        finish_reason=_FINISH_REASONS[delta.finish_reason],
        matched_stop=delta.matched_stop,
        usage=pb.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            queue_time_ms=usage.queue_time_s * 1000.0,
            time_to_first_token_ms=ttft * 1000.0 if ttft is not None else 0.0,
            cached_prompt_tokens=usage.cached_prompt_tokens,
        ),
    )


def started_message(request: GenerationRequest, model: ModelDescription) -> pb.GenerateResponse:
    return pb.GenerateResponse(started=started(request, model))


def chunk_message(delta: GenerationDelta) -> pb.GenerateResponse:
    return pb.GenerateResponse(chunk=chunk(delta))


def finished_message(delta: GenerationDelta) -> pb.GenerateResponse:
    return pb.GenerateResponse(finished=finished(delta))


def model_info_message(
    model: ModelDescription,
    *,
    model_version: str,
    max_new_tokens_limit: int,
    auth_enabled: bool,
    max_images_per_request: int = 0,
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
        supports_chat=model.has_chat_template,
        supports_images=model.supports_images,
        max_images_per_request=max_images_per_request if model.supports_images else 0,
    )
    return pb.GetModelInfoResponse(model_info=info)
