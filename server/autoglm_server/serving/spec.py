"""A request as either front door received it, before validation: the shared path's input.

Each front door maps its wire format (protobuf, OpenAI JSON) onto these plain values and names its
own fields in a `FieldNames` map, so that one set of rules (serving/validate.py) can report a bad
field under the name the caller used: `sampling.temperature` over gRPC, `temperature` over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """Sampling settings as sent; None means the caller left it unset."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class OptionsSpec:
    """Everything a request sets besides its prompt."""

    max_new_tokens: int | None = None
    sampling: SamplingSpec = SamplingSpec()
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    request_id: str = ""
    priority: int = 0
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class TextPrompt:
    """A prompt given as text, tokenized by the server with special tokens."""

    text: str


@dataclass(frozen=True, slots=True)
class TokenPrompt:
    """A prompt given as token ids, used as they are."""

    token_ids: tuple[int, ...]


Prompt = TextPrompt | TokenPrompt


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """An image as sent: a URL (data:, or an operator-allowed http(s)/file URL), or raw bytes."""

    url: str = ""
    data: bytes | None = None
    mime_type: str = ""


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A chat message as sent: a role name and its parts (text, or an image)."""

    role: str
    parts: tuple[str | ImageSpec, ...]


@dataclass(frozen=True, slots=True)
class FieldNames:
    """How a front door names the neutral fields in its errors.

    Keys are the neutral names used by the validation rules (`max_new_tokens`, `temperature`,
    `messages`, ...); a key that is not mapped is reported as it is.
    """

    names: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, neutral: str) -> str:
        return self.names.get(neutral, neutral)

    def indexed(self, neutral: str, index: int) -> str:
        return f"{self(neutral)}[{index}]"
