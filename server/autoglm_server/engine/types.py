"""Domain types of the engine. Pure Python: no protobuf, no torch, no HTTP framework."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL import Image

    from autoglm_server.engine.gpu_memory import HeadroomCheck


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
    # OpenAI semantics, over the tokens generated so far (not the prompt): a token's logit loses
    # presence_penalty once it has appeared and frequency_penalty times the number of appearances.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


ANONYMOUS_TENANT = "anonymous"

ChatRole = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One decoded, size-checked image of a request (serving/images/ makes these).

    `image` is a fully loaded PIL image in RGB; `digest` is a SHA-256 of the encoded bytes (engines
    may use it as a cache key; it never leaves the process). `prepared` is an engine's own
    preprocessing of the image, made by its chat renderer in a worker thread so that the engine's
    step loop does not pay for it (the built-in engine: engine/vision_chat.py's ImageFeatures); None
    where the engine preprocesses images itself.
    """

    image: Image.Image
    mime_type: str
    width: int
    height: int
    encoded_bytes: int
    digest: str
    prepared: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TextPart:
    """Text in a chat message."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a chat message, already decoded."""

    image: ImageInput


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, validated; content parts in order."""

    role: ChatRole
    content: tuple[ContentPart, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined (images left out)."""
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return tuple(part.image for part in self.content if isinstance(part, ImagePart))


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A conversation rendered by the engine's chat template.

    `token_ids` is what admission counts (for a vision model, with each image's placeholder tokens
    expanded to the number the model will see, or the engine's best estimate of it); `text` is the
    rendered template; `images` go with it in order of appearance.
    """

    token_ids: tuple[int, ...]
    text: str
    images: tuple[ImageInput, ...] = ()


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
    # For a chat request: the rendered prompt's text and its images, for engines that take the text
    # and images (vLLM's multimodal processor) rather than token ids. Empty for a plain prompt.
    prompt_text: str = ""
    images: tuple[ImageInput, ...] = ()
    # The caller's session (x-autoglm-session): logged and traced, never used for auth or routing.
    session_id: str = ""

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
    # Prompt tokens whose KV came from a prefix cache rather than a forward pass (0 with the cache off).
    cached_prompt_tokens: int = 0


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
    # Whether a chat template is there to render messages (the model's own or --chat-template).
    has_chat_template: bool = False
    # Vision: whether the model takes images, and the most per request (0 without vision).
    supports_images: bool = False
    max_images_per_request: int = 0


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's load, for metrics, readiness and tests."""

    running: int
    waiting: int
    reserved_tokens: int
    token_budget: int
    steps: int
    alive: bool
    # Engines with a paged KV cache (vLLM) report its use in [0, 1]; engines with a prefix cache on
    # report its counters (prompt tokens looked up / found, cumulative); None where there is no such thing.
    kv_cache_usage: float | None = None
    prefix_cache_queries: int | None = None
    prefix_cache_hits: int | None = None
    # The built-in engine's prefix cache: tokens of K/V it holds (counted in the KV budget with
    # reserved_tokens); None with the cache off and on vLLM (whose cache lives in its paged KV).
    prefix_cache_tokens: int | None = None
    # On CUDA: the start-up memory check of each GPU the engine uses (total, free at start, reserved).
    gpu_memory: tuple[HeadroomCheck, ...] = ()
    # A paged KV cache's geometry (tokens per block, blocks on the device), for routers that size
    # their prefix index from it (vllm:cache_config_info); None where the engine has no blocks.
    kv_block_size: int | None = None
    kv_num_blocks: int | None = None
    # The built-in engine's step timers (engine/builtin/timers.py): cumulative seconds per phase of
    # its steps (forward, schedule, sample, output, handoff; deliver on the event loop; the engine
    # thread's cpu and forward_cpu) and the steps they cover. None where the engine has none.
    phase_seconds: Mapping[str, float] | None = None
    timed_steps: int | None = None
