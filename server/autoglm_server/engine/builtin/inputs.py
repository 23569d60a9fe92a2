"""What a model family's prefill forward takes: token ids alone, or token ids with images and 3-D positions.

The runner is the same for every family; what differs is how one prefill batch becomes the model's
inputs and where each row's positions stand afterwards. Decode is the same for all: each row feeds
its newest token at one scalar position. For GLM-4.1V that works because every text token after the
prompt has the same position on its three rotary axes (time, height, width): the prompt's largest
position plus one, plus one per generated token. So a row's rope delta (GLM's `get_rope_index`:
positions used minus tokens) is carried in its next position, and the KV batch stays model-agnostic.

- `TextInputs`: a causal LM; positions count each row's real tokens.
- `Glm4vInputs`: Glm4vForConditionalGeneration; the images of the batch (in row order) as the
  model's image processor makes them (done already by the chat renderer in a worker thread, see
  engine/vision_chat.py; here only for an image that comes without), the vision tower inside the same
  forward, positions from the model's own `get_rope_index` over the left-padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autoglm_server.engine.types import ImageInput
from autoglm_server.engine.vision_chat import ImageFeatures
from autoglm_server.errors import InvalidRequestError


@dataclass
class PrefillInputs:
    """One prefill batch as the model takes it, and where each row goes on from.

    With a prefix cache, `ids`, `mask` and the forward's positions cover only each row's uncached
    rest (the tokens after its `cached` ones), left-padded; the positions are those the whole prompt
    has there, and `next_positions` is what a prefill of the whole prompt gives.
    """

    ids: torch.Tensor  # [rows, width] left-padded
    mask: torch.Tensor  # [rows, width] 0 on padding
    forward: dict[str, Any]  # keyword arguments of the forward (ids and mask included)
    next_positions: torch.Tensor  # [rows] the position id of each row's first generated token


class InputStrategy(Protocol):
    """Builds a prefill batch's model inputs; `images[i]` are row i's images in prompt order, and
    row i's first `cached[i]` tokens (never an image's) already have their K/V (empty: none cached)."""

    def build(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[Sequence[ImageInput]],
        device: torch.device,
        cached: Sequence[int] = (),
    ) -> PrefillInputs: ...


def uncached(prompts: Sequence[Sequence[int]], cached: Sequence[int]) -> list[Sequence[int]]:
    """Each prompt without its cached prefix."""
    return [prompt[skip:] for prompt, skip in zip(prompts, cached or [0] * len(prompts), strict=True)]


def left_pad(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


class TextInputs:
    """A causal LM's prompt: positions count real tokens only, as generate() does for left-padded input."""

    def build(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[Sequence[ImageInput]],
        device: torch.device,
        cached: Sequence[int] = (),
    ) -> PrefillInputs:
        ids, mask = left_pad(uncached(prompts, cached), device)
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        if cached:  # the rest of a prompt starts at the position after its cached tokens
            offsets = torch.tensor(list(cached), dtype=torch.long, device=device)
            position_ids = position_ids + offsets.unsqueeze(1) * mask
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        forward = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids}
        return PrefillInputs(ids, mask, forward, lengths)


class Glm4vInputs:
    """GLM-4.1V: pixels and grids from the model's image processor, 3-D positions from get_rope_index."""

    def __init__(self, model: Any, image_processor: Any, processor_kwargs: dict[str, Any]) -> None:
        self._model = model
        self._image_processor = image_processor
        self._kwargs = processor_kwargs
        self._image_token_id = int(model.config.image_token_id)
        self._merge = int(model.config.vision_config.spatial_merge_size)
        self._text = TextInputs()

    def build(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[Sequence[ImageInput]],
        device: torch.device,
        cached: Sequence[int] = (),
    ) -> PrefillInputs:
        flat = [image for row in images for image in row]
        if not flat:  # text only: GLM's three axes agree, and the text model spreads 2-D positions on them
            return self._text.build(prompts, images, device, cached)
        ids, mask = left_pad(prompts, device)
        pixels, grid = self._features(flat)
        grid = grid.to(device)
        self._check_placeholders(ids, images, grid)
        types = ((ids == self._image_token_id) & (mask == 1)).int()
        with torch.inference_mode():
            positions, deltas = self._model.model.get_rope_index(
                ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=mask
            )
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        if any(cached):
            # Positions come from the whole prompt, as a full prefill has them; the forward takes the
            # uncached rest, right-aligned like the whole prompt, so its positions are the last columns.
            ids, mask = left_pad(uncached(prompts, cached), device)
            positions = positions[..., -ids.shape[1] :]
        forward = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "pixel_values": pixels.to(device=device, dtype=self._model.dtype),
            "image_grid_thw": grid,
        }
        return PrefillInputs(ids, mask, forward, lengths + deltas.view(-1).to(device))

    def _features(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's patches and grids, in image order: the renderer's where every image has them
        (the processor works image by image, so the concatenation is what one call over all makes)."""
        prepared = [image.prepared for image in images]
        if all(isinstance(p, ImageFeatures) for p in prepared):
            ready = [p for p in prepared if isinstance(p, ImageFeatures)]
            return torch.cat([p.pixel_values for p in ready]), torch.cat([p.grid_thw for p in ready])
        features = self._image_processor(images=[image.image for image in images], return_tensors="pt", **self._kwargs)
        return features["pixel_values"], features["image_grid_thw"]

    def _check_placeholders(
        self, ids: torch.Tensor, images: Sequence[Sequence[ImageInput]], grid: torch.Tensor
    ) -> None:
        """Each row must hold exactly its images' visual tokens; anything else would fail the whole batch
        inside the model (a token-id prompt can name the image token with no image behind it)."""
        per_image = (grid.prod(-1) // (self._merge * self._merge)).tolist()
        found = (ids == self._image_token_id).sum(-1).tolist()
        start = 0
        for row, row_images in enumerate(images):
            expected = sum(per_image[start : start + len(row_images)])
            start += len(row_images)
            if found[row] != expected:
                raise InvalidRequestError(
                    "prompt",
                    f"the prompt holds {found[row]} image placeholder tokens where its {len(row_images)} images"
                    f" make {expected}",
                )
