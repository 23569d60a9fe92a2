"""Chat rendering for a vision model served by vLLM: the template's text plus the images' token count.

The text keeps one image placeholder per image; vLLM's multimodal processor expands each into the
tokens of that image's patches. Admission needs the expanded length up front, so the token ids here
have each placeholder repeated as many times as the model's image processor will make patches
(grid t x h x w over merge_size squared, the Qwen2-VL/GLM-4.1V family's rule). For a processor that
reports no grid, the single placeholder stays: an underestimate, and vLLM still refuses what does not
fit its context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autoglm_server.engine.types import ChatMessage, ImageInput, ImagePart, RenderedPrompt
from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError


class VisionChatRenderer:
    def __init__(
        self,
        tokenizer: Any,
        processor: Any,
        template: str | None,
        max_images: int,
        mm_kwargs: dict[str, Any],
    ) -> None:
        self._tokenizer = tokenizer
        self._processor = processor
        self._template = (
            template or getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        )
        self._max_images = max_images
        self._mm_kwargs = mm_kwargs
        image_token = getattr(processor, "image_token", None)
        self._image_token_id: int | None = (
            int(tokenizer.convert_tokens_to_ids(image_token)) if isinstance(image_token, str) else None
        )
        image_processor = getattr(processor, "image_processor", None)
        self._merge = int(getattr(image_processor, "merge_size", 1) or 1)

    @property
    def available(self) -> bool:
        return self._template is not None

    def render(self, messages: Sequence[ChatMessage], model_id: str) -> RenderedPrompt:
        if self._template is None:
            raise InvalidRequestError(
                "messages", f"model {model_id} has no chat template; start the server with --chat-template FILE"
            )
        images = tuple(image for message in messages for image in message.images)
        if len(images) > self._max_images:
            raise PayloadTooLargeError(
                "messages",
                f"{len(images)} images, more than the {self._max_images} this server takes per request"
                " (--limit-images-per-request)",
            )
        conversation = [_as_dict(message) for message in messages]
        try:
            text = self._tokenizer.apply_chat_template(
                conversation, chat_template=self._template, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # jinja2's TemplateError (and the template's raise_exception)
            raise InvalidRequestError("messages", f"the chat template refused the conversation: {error}") from None
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return RenderedPrompt(token_ids=tuple(self._expand(ids, images)), text=str(text), images=images)

    def _expand(self, ids: list[int], images: tuple[ImageInput, ...]) -> list[int]:
        if self._image_token_id is None or not images:
            return ids
        counts = iter([self.image_tokens(image) for image in images])
        expanded: list[int] = []
        for token in ids:
            if token == self._image_token_id:
                expanded.extend([token] * next(counts, 1))
            else:
                expanded.append(token)
        return expanded

    def image_tokens(self, image: ImageInput) -> int:
        """Tokens the model will see for one image, from its image processor's patch grid."""
        image_processor = getattr(self._processor, "image_processor", None)
        if image_processor is None:
            return 1
        features = image_processor(images=[image.image], return_tensors="np", **self._mm_kwargs)
        grid = features.get("image_grid_thw")
        if grid is None:
            return 1
        return max(1, math.prod(int(x) for x in grid[0]) // (self._merge * self._merge))


def _as_dict(message: ChatMessage) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            parts.append({"type": "image"})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": parts}
