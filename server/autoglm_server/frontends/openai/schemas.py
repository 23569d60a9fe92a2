"""OpenAI request bodies, parsed with pydantic and mapped onto the shared request specs.

Fields follow the OpenAI API reference for chat completions and (legacy) completions. Fields a
client may send that this server cannot honour (n > 1, tools, best_of, echo, suffix, a JSON
response format) are refused with 400 naming them, never silently ignored; fields it does not know
are ignored, as OpenAI-compatible servers do, so newer SDKs keep working. Extensions that vLLM's
server also takes (top_k, repetition_penalty, ignore_eos, stop_token_ids, priority) are accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from autoglm_server.errors import InvalidRequestError
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

# OpenAI names of the neutral fields, for error messages (`param` in the error body).
HTTP_FIELDS = FieldNames({"max_new_tokens": "max_tokens", "text": "prompt", "token_ids": "prompt"})
Number = StrictFloat | StrictInt


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ImageUrl(_Body):
    url: StrictStr
    detail: StrictStr | None = None


class TextContent(_Body):
    type: Literal["text"]
    text: StrictStr


class ImageContent(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl


class StreamOptions(_Body):
    include_usage: StrictBool = False


class ChatMessageBody(_Body):
    role: StrictStr
    content: StrictStr | list[TextContent | ImageContent] | None = None
    name: StrictStr | None = None


class _Sampling(_Body):
    """The fields chat completions and completions share."""

    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = 1
    user: StrictStr | None = None
    # Extensions (vLLM's server takes them too).
    top_k: StrictInt | None = None
    repetition_penalty: Number | None = None
    ignore_eos: StrictBool = False
    stop_token_ids: list[StrictInt] = Field(default_factory=list)
    priority: StrictInt = 0

    def options(self, max_tokens: int | None, logprobs: bool, top_logprobs: int) -> OptionsSpec:
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError("stream_options", "only allowed with stream=true")
        if self.n != 1:
            raise InvalidRequestError("n", f"only n=1 is served, got {self.n}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return OptionsSpec(
            max_new_tokens=max_tokens,
            sampling=SamplingSpec(
                temperature=_float(self.temperature),
                top_p=_float(self.top_p),
                top_k=self.top_k,
                repetition_penalty=_float(self.repetition_penalty),
                presence_penalty=_float(self.presence_penalty),
                frequency_penalty=_float(self.frequency_penalty),
                seed=self.seed,
            ),
            stop=stop,
            stop_token_ids=tuple(self.stop_token_ids),
            priority=self.priority,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            ignore_eos=self.ignore_eos,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def _refuse(self, field: str, why: str) -> None:
        if self.model_extra and self.model_extra.get(field) not in (None, False, [], {}):
            raise InvalidRequestError(field, why)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageBody]
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None

    def to_specs(self) -> tuple[list[MessageSpec], OptionsSpec]:
        self._refuse("tools", "tool calling is not served")
        self._refuse("functions", "function calling is not served")
        format_type = (self.model_extra or {}).get("response_format")
        if isinstance(format_type, dict) and format_type.get("type", "text") != "text":
            raise InvalidRequestError("response_format", "only the text response format is served")
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        options = self.options(max_tokens, self.logprobs, self.top_logprobs or 0)
        return [_message(index, message) for index, message in enumerate(self.messages)], options


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    logprobs: StrictInt | None = None
    echo: StrictBool = False

    def to_specs(self) -> tuple[Prompt, OptionsSpec]:
        if self.echo:
            raise InvalidRequestError("echo", "echo is not served")
        self._refuse("suffix", "suffix is not served")
        best_of = (self.model_extra or {}).get("best_of")
        if best_of not in (None, 1):
            raise InvalidRequestError("best_of", f"only best_of=1 is served, got {best_of}")
        top = self.logprobs or 0
        return _prompt(self.prompt), self.options(self.max_tokens, self.logprobs is not None, top)


def _float(value: float | int | None) -> float | None:
    return float(value) if value is not None else None


def _prompt(prompt: str | list[int] | list[str] | list[list[int]]) -> Prompt:
    if isinstance(prompt, str):
        return TextPrompt(prompt)
    if prompt and all(isinstance(item, int) for item in prompt):
        return TokenPrompt(tuple(prompt))  # type: ignore[arg-type]
    if len(prompt) != 1:
        raise InvalidRequestError("prompt", f"one prompt per request is served, got {len(prompt)}")
    only: Any = prompt[0]
    return TextPrompt(only) if isinstance(only, str) else TokenPrompt(tuple(only))


def _message(index: int, message: ChatMessageBody) -> MessageSpec:
    # "developer" is OpenAI's newer name for system instructions.
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if content is None:
        return MessageSpec(role=role, parts=())
    if isinstance(content, str):
        return MessageSpec(role=role, parts=(content,))
    parts: list[str | ImageSpec] = []
    for part in content:
        if isinstance(part, TextContent):
            parts.append(part.text)
        else:
            parts.append(ImageSpec(url=part.image_url.url))
    return MessageSpec(role=role, parts=tuple(parts))
