"""The built-in engine on builtin:glm4v-tiny (GLM-4.1V, random weights, float32) with a 1080x2400 screenshot.

Parity with transformers' own generate on an Open-AutoGLM-shaped step (system prompt, screenshot,
temperature 0): same prompt ids, same pixels and grid into the model, same tokens, chosen-token
logprobs within 1e-5. Then continuous batching (an image row joining a text row mid-decode, each
equal to its solo run), cancellation, and the refusals. max_pixels is lowered to 300,000 so that the
vision tower stays cheap on a small CPU; the rule it feeds is the real one.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from PIL import Image

from autoglm_server.config import load_settings
from autoglm_server.engine import builtin_models
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.inputs import Glm4vInputs, PrefillInputs
from autoglm_server.engine.builtin.loader import ModelLoadError
from autoglm_server.engine.builtin.patch_embedding import PatchLinear
from autoglm_server.engine.types import ChatMessage, GenerationRequest, ImageInput, ImagePart, TextPart
from autoglm_server.engine.vision_chat import ImageFeatures
from autoglm_server.errors import InvalidRequestError
from autoglm_server.parity import reference
from autoglm_server.parity.compare import compare

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

MAX_PIXELS = 300_000
PROCESSOR_KWARGS = {"size": {"shortest_edge": 12544, "longest_edge": MAX_PIXELS}}
SYSTEM = 'You are a phone-operating agent. Answer with one action such as do(action="Tap", element=[500, 300]).'
TEXT = 'Open the Settings app\n\n** Screen Info **\n\n{"current_app": "System Home"}'
STEPS = 8
# float32 on one CPU: the engine and generate agree to ~1e-6; a changed image moves them by ~3e-5.
TOLERANCE = 1e-5


def screenshot(width: int = 1080, height: int = 2400) -> ImageInput:
    """A PNG as a phone sends it, decoded with Pillow as the daemon decodes uploads."""
    image = Image.new("RGB", (width, height), (245, 245, 245))
    for row in range(0, height, 120):
        image.paste((30, 90 + row % 160, 200), (40, row + 20, width - 40, row + 80))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    decoded = Image.open(io.BytesIO(data)).convert("RGB")
    return ImageInput(decoded, "image/png", width, height, len(data), hashlib.sha256(data).hexdigest())


class Recording:
    """Wraps the runner's input strategy and keeps what each prefill handed the model."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.built: list[PrefillInputs] = []

    def build(
        self, prompts: Sequence[Sequence[int]], images: Any, device: torch.device, cached: Sequence[int] = ()
    ) -> PrefillInputs:
        built: PrefillInputs = self.inner.build(prompts, images, device, cached)
        self.built.append(built)
        return built


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    settings = load_settings(
        [
            *("--model", "builtin:glm4v-tiny", "--dtype", "float32", "--max-running", "4"),
            *("--mm-processor-kwargs", f'{{"max_pixels": {MAX_PIXELS}}}', "--limit-images-per-request", "2"),
        ]
    )
    eng = AsyncEngine(settings)
    await eng.start()
    yield eng
    await eng.shutdown()


def chat(image: ImageInput | None, text: str = TEXT) -> list[ChatMessage]:
    parts: tuple[Any, ...] = ((ImagePart(image),) if image is not None else ()) + (TextPart(text),)
    return [ChatMessage("system", (TextPart(SYSTEM),)), ChatMessage("user", parts)]


async def run(engine: AsyncEngine, rid: str, messages: list[ChatMessage], steps: int = STEPS) -> reference.Run:
    rendered = engine.render_chat(messages)
    request = GenerationRequest(
        request_id=rid,
        prompt_token_ids=rendered.token_ids,
        images=rendered.images,
        max_new_tokens=steps,
        ignore_eos=True,
        logprobs=True,
    )
    tokens: list[int] = []
    logprobs: list[float] = []
    async for delta in await engine.submit(request):
        tokens += delta.token_ids
        logprobs += [item.logprob for item in delta.logprobs]
    return reference.Run(list(rendered.token_ids), tokens, logprobs)


@functools.cache
def pristine() -> tuple[Any, Any, Any]:
    """The same seeded model as transformers builds it, untouched by the engine's loader (which runs the
    vision tower's patch embedding as a matmul, engine/builtin/patch_embedding.py)."""
    tokenizer, model, image_processor = builtin_models.build("builtin:glm4v-tiny")
    return tokenizer, model.to(torch.float32).eval(), image_processor


def transformers_run(engine: AsyncEngine, image: ImageInput | None, kwargs: dict[str, Any]) -> reference.Run:
    tokenizer, model, image_processor = pristine()
    assert isinstance(model.model.visual.patch_embed.proj, torch.nn.Conv3d)  # transformers' own layer
    step = reference.Step(SYSTEM, TEXT, image.image if image is not None else None)
    inputs = reference.prepare(model, tokenizer, image_processor, step, kwargs)
    return reference.generate(model, inputs, STEPS)


async def test_describes_a_vision_model(engine: AsyncEngine) -> None:
    model = engine.model
    assert model.architecture == "Glm4vForConditionalGeneration"
    assert model.supports_images
    assert model.max_images_per_request == 2
    assert model.has_chat_template
    assert model.random_weights


async def test_the_engine_embeds_patches_with_a_matmul(engine: AsyncEngine) -> None:
    """The loader swapped the vision tower's one-patch Conv3d; the parity tests below compare against the
    unswapped model, so they bound what the swap changes."""
    assert engine._loaded is not None
    assert isinstance(engine._loaded.model.model.visual.patch_embed.proj, PatchLinear)


async def test_a_screenshot_step_matches_transformers_generate(engine: AsyncEngine) -> None:
    image = screenshot()
    recording = Recording(engine.runner.inputs)
    engine.runner.inputs = recording
    try:
        ours = await run(engine, "parity", chat(image))
    finally:
        engine.runner.inputs = recording.inner
    theirs = transformers_run(engine, image, PROCESSOR_KWARGS)
    verdict = compare(theirs, ours, tolerance=TOLERANCE)
    assert verdict.ok, verdict
    assert len(ours.prompt_ids) == len(theirs.prompt_ids) > 300  # the screenshot's visual tokens are in the count
    (built,) = recording.built
    assert theirs.pixel_values is not None
    assert theirs.image_grid_thw is not None
    assert torch.equal(built.forward["image_grid_thw"].cpu(), theirs.image_grid_thw)
    assert torch.equal(built.forward["pixel_values"].cpu(), theirs.pixel_values)


async def test_screenshots_are_preprocessed_while_rendering_not_on_the_engine_thread(engine: AsyncEngine) -> None:
    """The renderer (a worker thread in the daemon) makes each image's patches; the engine thread's step
    loop, which every running stream waits on, never calls the image processor for them."""
    inputs = engine.runner.inputs
    assert isinstance(inputs, Glm4vInputs)
    calls: list[int] = []
    processor = inputs._image_processor

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return processor(*args, **kwargs)

    rendered = engine.render_chat(chat(screenshot()))
    (image,) = rendered.images
    assert isinstance(image.prepared, ImageFeatures)
    assert image.prepared.pixel_values.dtype == torch.float32  # the engine's dtype
    inputs._image_processor = counting
    try:
        ours = await run(engine, "prepared", chat(screenshot()))
        assert calls == []
        # An image that arrives without features (a caller other than the renderer) is processed there.
        bare = GenerationRequest(
            request_id="bare",
            prompt_token_ids=rendered.token_ids,
            images=(replace(image, prepared=None),),
            max_new_tokens=STEPS,
            ignore_eos=True,
        )
        tokens = [t async for delta in await engine.submit(bare) for t in delta.token_ids]
        assert calls == [1]
    finally:
        inputs._image_processor = processor
    assert tokens == ours.tokens


async def test_a_changed_resize_rule_is_caught(engine: AsyncEngine) -> None:
    """The comparison fails when the reference resizes differently (max_pixels 10% lower), or when the
    screenshot is 2 pixels narrower: parity tests that could not see this would prove nothing."""
    image = screenshot()
    ours = await run(engine, "rule", chat(image))
    other_rule = {"size": {"shortest_edge": 12544, "longest_edge": MAX_PIXELS * 9 // 10}}
    verdict = compare(transformers_run(engine, image, other_rule), ours)
    assert not verdict.ok
    assert verdict.first_divergence == 0
    # Same grid at this max_pixels, other pixels: only the logprobs tell (by ~3e-5 on this model).
    narrower = compare(transformers_run(engine, screenshot(1078), PROCESSOR_KWARGS), ours, tolerance=TOLERANCE)
    assert not narrower.ok
    assert narrower.prompt_tokens[0] == narrower.prompt_tokens[1]


async def test_image_and_text_rows_batch_together_as_they_run_alone(engine: AsyncEngine) -> None:
    image, small = screenshot(), screenshot(600, 800)
    alone = [await run(engine, "alone-text", chat(None), 24), await run(engine, "alone-image", chat(image))]
    alone.append(await run(engine, "alone-small", chat(small)))

    async def joining() -> list[reference.Run]:
        await asyncio.sleep(0)  # the text row is prefilled first; the image rows join its decode
        return list(await asyncio.gather(run(engine, "image", chat(image)), run(engine, "small", chat(small))))

    text_run, (image_run, small_run) = await asyncio.gather(run(engine, "text", chat(None), 24), joining())
    for batched, solo in zip((text_run, image_run, small_run), alone, strict=True):
        verdict = compare(solo, batched, tolerance=TOLERANCE)
        assert verdict.ok, verdict


async def test_cancelling_an_image_request_frees_its_row(engine: AsyncEngine) -> None:
    rendered = engine.render_chat(chat(screenshot()))
    request = GenerationRequest(
        request_id="cancel", prompt_token_ids=rendered.token_ids, images=rendered.images, max_new_tokens=2000
    )
    stream = await engine.submit(request)
    first = await stream.__anext__()
    assert first.token_ids
    assert engine.stats().reserved_tokens >= len(rendered.token_ids) + 2000  # visual tokens are reserved too
    await stream.aclose()
    for _ in range(200):  # the row leaves at the next engine step
        if engine.stats().running == 0 and engine._core is not None and engine._core.batch_rows == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.stats().running == 0
    assert engine.stats().reserved_tokens == 0


async def test_an_image_placeholder_without_an_image_is_refused(engine: AsyncEngine) -> None:
    image_token = int(engine._loaded.model.config.image_token_id) if engine._loaded else 0
    with pytest.raises(InvalidRequestError, match="image placeholder"):
        await engine.submit(GenerationRequest(request_id="ph", prompt_token_ids=(1, image_token, 2), max_new_tokens=2))
    with pytest.raises(InvalidRequestError, match="image placeholders"):
        engine.render_chat(chat(None, text="look: <|image|>"))


async def test_a_vision_model_without_a_strategy_is_refused_at_start(tmp_path: Path) -> None:
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(architectures=["Qwen2VLForConditionalGeneration"])
    config.save_pretrained(tmp_path)
    engine = AsyncEngine(load_settings(["--model", str(tmp_path)]))
    with pytest.raises(ModelLoadError, match=r"vision model \(Qwen2VLForConditionalGeneration\).*--engine vllm"):
        await engine.start()
    await engine.shutdown()
