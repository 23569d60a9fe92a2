"""Chat messages as sent -> validated domain messages, with their images decoded under the caps.

The cheap rules run first (roles, image count, whether the model takes images at all), so a
request that can never be served costs no decoding; then each image is decoded (in a thread) and
charged against the request's byte budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from autoglm_server.engine.types import (
    ChatMessage,
    ChatRole,
    ContentPart,
    ImageInput,
    ImagePart,
    ModelDescription,
    TextPart,
)
from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError
from autoglm_server.serving import images
from autoglm_server.serving.spec import FieldNames, ImageSpec, MessageSpec
from autoglm_server.serving.validate import MAX_TEXT_BYTES_PER_CONTEXT_TOKEN

ROLES: tuple[str, ...] = get_args(ChatRole)
# Conversations longer than this are refused before anything else (Open-AutoGLM keeps up to 100 steps).
MAX_MESSAGES = 1024


def check_messages(
    messages: Sequence[MessageSpec], model: ModelDescription, limits: images.ImageLimits, names: FieldNames
) -> None:
    """The rules that need no decoding: roles, sizes, and whether (and how many) images may come."""
    field = names("messages")
    if not messages:
        raise InvalidRequestError(field, "must hold at least one message")
    if len(messages) > MAX_MESSAGES:
        raise PayloadTooLargeError(field, f"at most {MAX_MESSAGES} messages, got {len(messages)}")
    if not model.has_chat_template:
        raise InvalidRequestError(
            field,
            f"model {model.model_id} has no chat template; start the server with --chat-template FILE, "
            "or use the completions API with a prompt",
        )
    text_bytes = 0
    image_count = 0
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidRequestError(
                f"{field}[{index}].role", f"must be one of {', '.join(ROLES)}, got {message.role!r}"
            )
        for part_index, part in enumerate(message.parts):
            if isinstance(part, str):
                text_bytes += len(part.encode("utf-8"))
                continue
            image_count += 1
            if not model.supports_images:
                raise InvalidRequestError(
                    f"{field}[{index}].content[{part_index}]",
                    f"model {model.model_id} takes no images; send text only",
                )
    budget = model.max_context_length * MAX_TEXT_BYTES_PER_CONTEXT_TOKEN
    if text_bytes > budget:
        raise PayloadTooLargeError(
            field,
            f"the messages hold over {budget} bytes of text ({MAX_TEXT_BYTES_PER_CONTEXT_TOKEN} per token of "
            f"the model's {model.max_context_length}-token context)",
        )
    images.ImageBudget(limits).check_count(image_count, field=field)
    if model.max_images_per_request and image_count > model.max_images_per_request:
        raise PayloadTooLargeError(
            field, f"model {model.model_id} takes at most {model.max_images_per_request} images, got {image_count}"
        )


async def decode_messages(
    messages: Sequence[MessageSpec], limits: images.ImageLimits, names: FieldNames
) -> list[ChatMessage]:
    """Domain messages with every image decoded and checked (call check_messages first)."""
    budget = images.ImageBudget(limits)
    field = names("messages")
    decoded: list[ChatMessage] = []
    for index, message in enumerate(messages):
        parts: list[ContentPart] = []
        for part_index, part in enumerate(message.parts):
            if isinstance(part, str):
                parts.append(TextPart(part))
                continue
            image = await _load(part, limits, budget, f"{field}[{index}].content[{part_index}]")
            parts.append(ImagePart(image))
        role = message.role
        assert role in ROLES  # check_messages ran
        decoded.append(ChatMessage(role=role, content=tuple(parts)))  # type: ignore[arg-type]
    return decoded


async def _load(part: ImageSpec, limits: images.ImageLimits, budget: images.ImageBudget, field: str) -> ImageInput:
    if part.data is not None:
        return await images.load_image_bytes(part.data, part.mime_type, limits, field=field, budget=budget)
    if not part.url:
        raise InvalidRequestError(field, "an image needs its data or a URL")
    return await images.load_image_url(part.url, limits, field=field, budget=budget)
