"""The SDK's value types: plain frozen dataclasses, so callers never touch protobuf messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(enum.StrEnum):
    """Why generation ended (the proto's FinishReason without its prefix, in lower case)."""

    UNSPECIFIED = "unspecified"
    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"
    STOP_TOKEN = "stop_token"
    EOS_TOKEN = "eos_token"
    CONTEXT_LENGTH = "context_length"
    CANCELLED = "cancelled"


class HealthStatus(enum.StrEnum):
    """A grpc.health.v1 serving status; SERVICE_UNKNOWN when the server does not know the service."""

    UNKNOWN = "UNKNOWN"
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"


@dataclass(frozen=True)
class Usage:
    """Token counts and timings of one request, as the server measured them."""

    prompt_tokens: int
    completion_tokens: int
    queue_time_ms: float
    time_to_first_token_ms: float
    # Part of prompt_tokens: those the engine's prefix cache supplied. The default keeps older
    # callers that build a Usage themselves working; a server without the field sends 0.
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class TopLogprob:
    """One alternative token at a position, with its natural-log probability."""

    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token and, when asked, the top alternatives."""

    token_id: int
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Started:
    """The first event of a stream: the request was admitted."""

    request_id: str
    prompt_tokens: int
    model_id: str


@dataclass(frozen=True)
class Chunk:
    """Newly generated tokens and the text they add to the output."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The last event of a stream: why generation ended, and usage."""

    finish_reason: FinishReason
    usage: Usage
    matched_stop: str = ""


GenerateEvent = Started | Chunk | Finished
"""What `generate()` and `chat()` yield: one Started, then Chunks, then one Finished."""


@dataclass(frozen=True)
class GenerationResult:
    """The whole output of one request, as `generate_text()` and `chat_text()` return it."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    request_id: str
    matched_stop: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """What the daemon serves and how (see GetModelInfo in the proto for each field)."""

    model_id: str
    revision: str
    model_version: str
    max_context_length: int
    eos_token_ids: tuple[int, ...]
    dtype: str
    device: str
    server_version: str
    vocab_size: int
    architecture: str
    max_new_tokens_limit: int
    auth_enabled: bool
    warnings: tuple[str, ...]
    supports_chat: bool = False
    supports_images: bool = False
    max_images_per_request: int = 0
