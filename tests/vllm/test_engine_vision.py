"""The vLLM engine over a tiny random-weight GLM-4.1V (AutoGLM-Phone's architecture) with a screenshot."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

from PIL import Image

from autoglm_server.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    ImageInput,
    ImagePart,
    SamplingOptions,
    TextPart,
)
from autoglm_server.engine.vllm.engine import VllmEngine
from autoglm_server.errors import PayloadTooLargeError
from tests.vllm.support import THIRD_PARTY_WARNINGS, settings

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
    *(pytest.mark.filterwarnings(rule) for rule in THIRD_PARTY_WARNINGS),
]

SYSTEM_PROMPT = "You are a phone agent. Look at the screenshot and answer with one action. " * 4


def screenshot(width: int = 1080, height: int = 2400) -> ImageInput:
    """A 1080x2400 PNG as a phone sends it, decoded with Pillow as the daemon decodes uploads."""
    image = Image.new("RGB", (width, height), (245, 245, 245))
    for row in range(0, height, 120):  # some structure, so the PNG is not trivially flat
        image.paste((30, 90 + row % 160, 200), (40, row + 20, width - 40, row + 80))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = buffer.getvalue()
    decoded = Image.open(io.BytesIO(encoded))
    decoded.load()
    return ImageInput(
        image=decoded.convert("RGB"),
        mime_type="image/png",
        width=width,
        height=height,
        encoded_bytes=len(encoded),
        digest=hashlib.sha256(encoded).hexdigest(),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(glm_dir: Path) -> AsyncIterator[VllmEngine]:
    eng = VllmEngine(
        settings(str(glm_dir), max_running=2, mm_processor_kwargs='{"max_pixels": 5000000}', limit_images_per_request=2)
    )
    await eng.start()
    yield eng
    await eng.shutdown()


async def test_describes_a_vision_model(engine: VllmEngine) -> None:
    model = engine.model
    assert model.architecture == "Glm4vForConditionalGeneration"
    assert model.supports_images
    assert model.max_images_per_request == 2
    assert model.has_chat_template


async def test_screenshot_request_streams(engine: VllmEngine) -> None:
    messages = [
        ChatMessage("system", (TextPart(SYSTEM_PROMPT),)),
        ChatMessage("user", (ImagePart(screenshot()), TextPart("Open the settings app."))),
    ]
    rendered = engine.render_chat(messages)
    assert rendered.text.count("<|image|>") == 1
    assert len(rendered.images) == 1
    # Open-AutoGLM's sampling: temperature 0, top_p 0.85, frequency_penalty 0.2.
    request = GenerationRequest(
        request_id="screen",
        prompt_token_ids=rendered.token_ids,
        prompt_text=rendered.text,
        images=rendered.images,
        max_new_tokens=6,
        ignore_eos=True,
        sampling=SamplingOptions(temperature=0.0, top_p=0.85, frequency_penalty=0.2),
    )
    deltas = [delta async for delta in await engine.submit(request)]
    assert sum(len(delta.token_ids) for delta in deltas) == 6
    last = deltas[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert last.usage is not None
    # The admission estimate (placeholders expanded by the image processor's grid) is exact.
    assert last.usage.prompt_tokens == len(rendered.token_ids)
    assert last.usage.prompt_tokens > 3000  # 1080x2400 under max_pixels 5,000,000: 3,108 image tokens


async def test_too_many_images_are_refused(engine: VllmEngine) -> None:
    small = screenshot(64, 64)
    parts = (ImagePart(small), ImagePart(small), ImagePart(small), TextPart("three"))
    with pytest.raises(PayloadTooLargeError, match="--limit-images-per-request"):
        engine.render_chat([ChatMessage("user", parts)])
