"""Chat rendering for a vision model (both engines): the template's text plus the images' token count.

The text keeps one image placeholder per image; vLLM's multimodal processor expands each into the
tokens of that image's patches, and the built-in engine feeds the token ids as they are here. Admission
needs the expanded length up front, so the token ids here have each placeholder repeated as many
times as the model's image processor will make patches (grid t x h x w over merge_size squared, the
Qwen2-VL/GLM-4.1V family's rule, as Glm4vProcessor expands it). For a processor that reports no grid,
the single placeholder stays: an underestimate, and vLLM still refuses what does not fit its context.

The count comes from the processor's resize rule alone (`get_number_of_image_patches`) where it has one,
without making pixels: vLLM preprocesses the image again in its own processor. The built-in engine
instead asks for the pixels here (`features_dtype`): rendering runs in a worker thread, so the image
processor's ~0.3-0.5 s per screenshot leaves the engine thread, which would otherwise stall every
running stream's decode while it resized and normalised (each image goes through the processor once).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from autoglm_server.engine.types import ChatMessage, ImageInput, ImagePart, RenderedPrompt
from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError, StartupError

# GLM-4.1V's smallest image area (its preprocessor's size.shortest_edge): kept when a user gives
# only Open-AutoGLM's max_pixels.
GLM_MIN_PIXELS = 12544


def mm_processor_kwargs(raw: str) -> dict[str, Any]:
    """Parse --mm-processor-kwargs, turning Open-AutoGLM's pixel bounds into the form that works.

    transformers' GLM-4.1V image processor ignores `max_pixels`/`min_pixels` (it reads
    `size.longest_edge`/`size.shortest_edge`, both in pixels of area); vLLM then sizes its encoder
    cache from the ignored value and refuses large screenshots. Translating keeps the user's intent.
    """
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StartupError(f"--mm-processor-kwargs is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise StartupError("--mm-processor-kwargs must be a JSON object")
    kwargs: dict[str, Any] = dict(parsed)
    max_pixels = kwargs.pop("max_pixels", None)
    min_pixels = kwargs.pop("min_pixels", None)
    if max_pixels is not None or min_pixels is not None:
        size = dict(kwargs.get("size") or {})
        size["longest_edge"] = int(max_pixels) if max_pixels is not None else size.get("longest_edge")
        size["shortest_edge"] = int(min_pixels) if min_pixels is not None else size.get("shortest_edge", GLM_MIN_PIXELS)
        kwargs["size"] = {key: value for key, value in size.items() if value is not None}
    return kwargs


@dataclass(frozen=True, slots=True)
class ImageFeatures:
    """One image as the model's image processor makes it: its patches (in the model's dtype, as the
    forward takes them) and its [1, 3] grid (t, h, w), for the built-in engine's prefill."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor


class VisionChatRenderer:
    """Renders conversations with images: `image_token` is the placeholder the template writes.

    With `features_dtype`, each rendered image carries its ImageFeatures (ImageInput.prepared).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        image_token: str | None,
        template: str | None,
        max_images: int,
        mm_kwargs: dict[str, Any],
        features_dtype: torch.dtype | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._features_dtype = features_dtype
        self._image_processor = image_processor
        self._template = template or getattr(tokenizer, "chat_template", None)
        self._max_images = max_images
        self._mm_kwargs = mm_kwargs
        self._image_token_id: int | None = (
            int(tokenizer.convert_tokens_to_ids(image_token)) if isinstance(image_token, str) else None
        )
        self._merge = int(getattr(image_processor, "merge_size", 1) or 1)
        # The resize rule reads only these of the processor's arguments; any other (say do_resize) may
        # change the grid, and then only the processor itself tells.
        self._counts_by_rule = hasattr(image_processor, "get_number_of_image_patches") and set(mm_kwargs) <= {
            "size",
            "patch_size",
            "merge_size",
        }

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
        if self._features_dtype is not None and self._image_token_id is not None:
            images = tuple(self.prepare(image) for image in images)
        return RenderedPrompt(token_ids=tuple(self._expand(ids, images)), text=str(text), images=images)

    def _expand(self, ids: list[int], images: tuple[ImageInput, ...]) -> list[int]:
        if self._image_token_id is None:
            return ids
        placeholders = ids.count(self._image_token_id)
        if placeholders != len(images):
            # The text itself named the placeholder (or the template dropped an image): the engine
            # would pair features with the wrong tokens.
            raise InvalidRequestError(
                "messages", f"the rendered prompt holds {placeholders} image placeholders for {len(images)} images"
            )
        if not images:
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
        if self._image_processor is None:
            return 1
        if isinstance(image.prepared, ImageFeatures):
            grid = image.prepared.grid_thw[0].tolist()
        elif self._counts_by_rule:
            try:
                size = image.image.size  # (width, height) of what the processor will see
                patches = self._image_processor.get_number_of_image_patches(size[1], size[0], self._mm_kwargs)
            except ValueError as error:  # e.g. GLM-4.1V's aspect-ratio limit of 200
                raise _refused(error) from None
            return max(1, int(patches) // (self._merge * self._merge))
        else:
            found = self._process(image, "np").get("image_grid_thw")
            if found is None:
                return 1
            grid = found[0]
        return max(1, math.prod(int(x) for x in grid) // (self._merge * self._merge))

    def prepare(self, image: ImageInput) -> ImageInput:
        """The image with its ImageFeatures attached (once: a prepared image is returned as it is)."""
        if isinstance(image.prepared, ImageFeatures):
            return image
        features = self._process(image, "pt")
        pixels = features["pixel_values"].to(dtype=self._features_dtype)
        return replace(image, prepared=ImageFeatures(pixels, features["image_grid_thw"]))

    def _process(self, image: ImageInput, tensors: str) -> Any:
        try:
            return self._image_processor(images=[image.image], return_tensors=tensors, **self._mm_kwargs)
        except ValueError as error:
            raise _refused(error) from None


def _refused(error: ValueError) -> InvalidRequestError:
    return InvalidRequestError("messages", f"the model's image processor refused an image: {error}")


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
