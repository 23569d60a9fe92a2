"""The messages of a chat: roles, text and image parts, and the OpenAI-style dicts they come from.

`Client.chat()` takes `Message` values, or the dicts an OpenAI client would send
(`{"role": "user", "content": "Hi"}`, or content as a list of `{"type": "text", "text": ...}` and
`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` parts), so code
written for the OpenAI SDK can pass its conversation unchanged. Every input is checked here and a
bad one raises ValueError or TypeError naming where it is (`messages[2].content[0]`), before
anything is sent.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoglm_client import _images


class Role(enum.StrEnum):
    """Who wrote a message (the proto's ChatRole without its prefix, in lower case)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True)
class TextPart:
    """A piece of text in a message."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be str, got {type(self.text).__name__}")


@dataclass(frozen=True, repr=False)
class ImagePart:
    """An image in a message: encoded bytes (PNG, JPEG or WebP) or a URL the server resolves.

    Give `data` (its type is read from its magic bytes; a `mime_type` given too must agree) or
    `url`. The server resolves only `data:` URLs unless its operator allowed a URL prefix; the
    constructors below turn files, bytes, PIL images and `data:` URLs into checked bytes.
    """

    data: bytes = b""
    mime_type: str = ""
    url: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(self.data).__name__}")
        if not isinstance(self.url, str) or not isinstance(self.mime_type, str):
            raise TypeError("url and mime_type must be str")
        if bool(self.data) == bool(self.url):
            raise ValueError("an ImagePart needs exactly one of data (non-empty bytes) or url")
        if self.url and self.mime_type:
            raise ValueError("mime_type goes with data; a URL's type is the server's to read")
        if self.data:
            data = bytes(self.data)
            object.__setattr__(self, "data", data)
            object.__setattr__(self, "mime_type", _images.checked_mime_type(data, self.mime_type, "image"))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, mime_type: str = "") -> ImagePart:
        """An image from its encoded bytes; the type comes from the bytes themselves."""
        return cls(data=bytes(data) if isinstance(data, bytearray | memoryview) else data, mime_type=mime_type)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ImagePart:
        """An image read from a file; its type comes from its bytes, not from the file's extension."""
        data = Path(path).read_bytes()
        return cls(data=data, mime_type=_images.checked_mime_type(data, None, str(path)))

    @classmethod
    def from_pil(cls, image: Any, image_format: str = "PNG") -> ImagePart:
        """An image from a PIL image, encoded as PNG (lossless, the default), JPEG or WEBP.

        Pillow is not a dependency of the SDK: it is imported here, on first use.
        """
        mime_type, data = _images.encode_pil(image, image_format)
        return cls(data=data, mime_type=mime_type)

    @classmethod
    def from_url(cls, url: str) -> ImagePart:
        """An image from a URL: a base64 `data:` URL is decoded and checked here, others go as URLs."""
        if not isinstance(url, str) or not url:
            raise ValueError("an image URL must be a non-empty str")
        if url[:5].lower() != "data:":
            return cls(url=url)
        declared, data = _images.parse_data_url(url)
        return cls(data=data, mime_type=_images.checked_mime_type(data, declared, "data: URL"))

    def __repr__(self) -> str:  # the bytes of a screenshot would fill a terminal
        if self.data:
            return f"ImagePart(mime_type={self.mime_type!r}, data=<{len(self.data)} bytes>)"
        shown = self.url if len(self.url) <= 64 else self.url[:61] + "..."
        return f"ImagePart(url={shown!r})"


ContentPart = TextPart | ImagePart
"""One piece of a message's content."""


def _role(value: object, where: str) -> Role:
    if isinstance(value, Role):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{where}.role must be str, got {type(value).__name__}")
    try:
        return Role(value.lower())
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ValueError(f"{where}.role must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True, init=False)
class Message:
    """One turn of a conversation: its role and its content, in order.

    `content` may be a str (one text part) or a sequence of TextPart, ImagePart and str items.
    """

    role: Role
    content: tuple[ContentPart, ...]

    def __init__(self, role: Role | str, content: str | Sequence[ContentPart | str]) -> None:
        object.__setattr__(self, "role", _role(role, "message"))
        object.__setattr__(self, "content", _content(content, "message"))


def _content(content: object, where: str) -> tuple[ContentPart, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if isinstance(content, bytes | bytearray) or not isinstance(content, Sequence):
        raise TypeError(f"{where}.content must be a str or a list of parts, got {type(content).__name__}")
    return tuple(_part(item, f"{where}.content[{i}]") for i, item in enumerate(content))


def _part(item: object, where: str) -> ContentPart:
    if isinstance(item, TextPart | ImagePart):
        return item
    if isinstance(item, str):
        return TextPart(item)
    if not isinstance(item, Mapping):
        raise TypeError(f"{where} must be a TextPart, an ImagePart, a str or a dict, got {type(item).__name__}")
    kind = item.get("type")
    if kind == "text":
        _only_keys(item, {"type", "text"}, where)
        if not isinstance(item.get("text"), str):
            raise ValueError(f'{where}: a "text" part needs a str "text"')
        return TextPart(item["text"])
    if kind == "image_url":
        _only_keys(item, {"type", "image_url"}, where)
        return _image_url(item.get("image_url"), where)
    raise ValueError(f'{where}: "type" must be "text" or "image_url", got {kind!r}')


def _image_url(value: object, where: str) -> ImagePart:
    # OpenAI's schema nests the URL ({"url": ..., "detail": ...}); a bare string is accepted too.
    # "detail" is a resolution hint of OpenAI's models; this daemon has no such knob and ignores it.
    if isinstance(value, Mapping):
        _only_keys(value, {"url", "detail"}, f"{where}.image_url")
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise ValueError(f'{where}: an "image_url" part needs a non-empty "url" string')
    try:
        return ImagePart.from_url(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _only_keys(item: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unsupported key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def as_message(value: object, where: str) -> Message:
    """A Message from a Message or an OpenAI-style dict; `where` names it in errors."""
    if isinstance(value, Message):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a Message or a dict, got {type(value).__name__}")
    _only_keys(value, {"role", "content"}, where)
    if "role" not in value or "content" not in value:
        raise ValueError(f'{where} needs "role" and "content"')
    message = Message.__new__(Message)
    object.__setattr__(message, "role", _role(value["role"], where))
    object.__setattr__(message, "content", _content(value["content"], where))
    return message


def as_messages(messages: object) -> tuple[Message, ...]:
    """Every message of a conversation, checked; a lone str or dict is a mistake, not a conversation."""
    if isinstance(messages, str | bytes | Mapping | Message) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of Message values or dicts, "
            f'such as [{{"role": "user", "content": "Hi"}}], got {type(messages).__name__}'
        )
    return tuple(as_message(m, f"messages[{i}]") for i, m in enumerate(messages))
