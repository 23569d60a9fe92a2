"""The vision renderer counts an image's tokens from GLM-4.1V's resize rule alone, without making pixels
(engine/vision_chat.py): the count must be what the image processor's own grid gives, for the sizes a
phone sends and the edges of the rule, and an image the processor refuses is refused by the rule too."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
import torch
from PIL import Image

from autoglm_server.engine import builtin_glm4v
from autoglm_server.engine.types import ImageInput
from autoglm_server.engine.vision_chat import ImageFeatures, VisionChatRenderer, mm_processor_kwargs
from autoglm_server.errors import InvalidRequestError

SIZES = [(1080, 2400), (2400, 1080), (720, 1600), (600, 800), (56, 56), (30, 29), (3000, 15), (28, 5000)]
KWARGS = ["", '{"max_pixels": 300000}', '{"max_pixels": 2000000, "min_pixels": 50000}']


def image(width: int, height: int) -> ImageInput:
    picture = Image.new("RGB", (width, height), (width % 256, height % 256, 90))
    digest = hashlib.sha256(f"{width}x{height}".encode()).hexdigest()
    return ImageInput(picture, "image/png", width, height, width * height, digest)


def renderer(kwargs: dict[str, Any], dtype: torch.dtype | None = None) -> VisionChatRenderer:
    return VisionChatRenderer(None, builtin_glm4v.build_image_processor(), None, "{{ x }}", 2, kwargs, dtype)


def processor_count(kwargs: dict[str, Any], picture: ImageInput) -> int:
    processor = builtin_glm4v.build_image_processor()
    grid = processor(images=[picture.image], return_tensors="np", **kwargs)["image_grid_thw"][0]
    return math.prod(int(x) for x in grid) // (processor.merge_size**2)


@pytest.mark.parametrize("raw", KWARGS)
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_rule_counts_what_the_processor_makes(raw: str, width: int, height: int) -> None:
    kwargs = mm_processor_kwargs(raw)
    assert renderer(kwargs)._counts_by_rule
    assert renderer(kwargs).image_tokens(image(width, height)) == processor_count(kwargs, image(width, height))


def test_an_image_the_processor_refuses_is_refused_by_the_rule() -> None:
    too_thin = image(10_050, 40)  # aspect ratio over GLM-4.1V's 200
    with pytest.raises(ValueError, match="aspect"):
        processor_count({}, too_thin)
    with pytest.raises(InvalidRequestError, match="refused an image"):
        renderer({}).image_tokens(too_thin)


def test_another_processor_argument_makes_the_processor_count() -> None:
    """An argument the rule does not read (here do_resize off) may change the grid: then the processor
    itself counts, and the count is right."""
    kwargs = {"do_resize": False}
    assert not renderer(kwargs)._counts_by_rule
    picture = image(560, 840)
    assert renderer(kwargs).image_tokens(picture) == processor_count(kwargs, picture) == 600


def test_prepared_features_are_the_processors_in_the_models_dtype() -> None:
    kwargs = mm_processor_kwargs('{"max_pixels": 300000}')
    picture = image(1080, 2400)
    prepared = renderer(kwargs, torch.bfloat16).prepare(picture)
    assert isinstance(prepared.prepared, ImageFeatures)
    expected = builtin_glm4v.build_image_processor()(images=[picture.image], return_tensors="pt", **kwargs)
    assert prepared.prepared.pixel_values.dtype == torch.bfloat16
    assert torch.equal(prepared.prepared.pixel_values, expected["pixel_values"].to(torch.bfloat16))
    assert torch.equal(prepared.prepared.grid_thw, expected["image_grid_thw"])
    assert prepared == picture  # the features do not take part in comparisons
    assert renderer(kwargs).image_tokens(prepared) == processor_count(kwargs, picture)
