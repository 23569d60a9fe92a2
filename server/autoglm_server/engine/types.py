"""Domain types of the engine. Pure Python: no protobuf, no torch."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class FinishReason(enum.Enum):
    """Why a request stopped generating."""

    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"
    STOP_TOKEN = "stop_token"
    EOS_TOKEN = "eos_token"
    CONTEXT_LENGTH = "context_length"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """Per-request sampling settings, already validated."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


ANONYMOUS_TENANT = "anonymous"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One validated request, in token ids."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingOptions = SamplingOptions()
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    priority: int = 0
    tenant: str = ANONYMOUS_TENANT
    # time.monotonic() value after which the request is worthless (the gRPC deadline), or None.
    deadline: float | None = None
    arrival_time: float = field(default_factory=time.monotonic)

    @property
    def reserved_tokens(self) -> int:
        """Tokens of KV budget the request may use at most: prompt plus output."""
        return len(self.prompt_token_ids) + self.max_new_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The log-probability of one generated token and, when asked, its top alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Counts and timings of a finished request."""

    prompt_tokens: int
    completion_tokens: int
    queue_time_s: float
    time_to_first_token_s: float | None


@dataclass(slots=True)
class GenerationDelta:
    """What one engine step added to one request.

    `text` is only complete characters; a stop string is never part of it. The last delta of a
    request has `finish_reason` and `usage` set (its text and tokens may be empty).
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    matched_stop: str = ""
    usage: Usage | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def merge(self, later: GenerationDelta) -> None:
        """Fold a later delta into this one (a slow consumer gets one bigger chunk)."""
        self.text += later.text
        self.token_ids.extend(later.token_ids)
        self.logprobs.extend(later.logprobs)
        if later.finish_reason is not None:
            self.finish_reason = later.finish_reason
            self.matched_stop = later.matched_stop
            self.usage = later.usage


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What the engine serves; GetModelInfo is built from it."""

    model_id: str
    revision: str
    architecture: str
    max_context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    dtype: str
    device: str
    random_weights: bool = False


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's load, for metrics, readiness and tests."""

    running: int
    waiting: int
    reserved_tokens: int
    token_budget: int
    steps: int
    alive: bool
