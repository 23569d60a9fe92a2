"""The prefix cache on builtin:glm4v-tiny (GLM-4.1V, float32, temperature 0) with Open-AutoGLM-shaped
steps: each step re-sends the conversation as text and one new screenshot at the end. The second
step takes the text in front of its screenshot from the cache; its tokens and chosen-token logprobs
(within 1e-5) equal the uncached engine's, so the 3-D rotary positions of the uncached rest and the
decode's rope deltas are those of a full prefill.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from autoglm_server.config import load_settings
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.prefix_cache import BLOCK_TOKENS
from autoglm_server.engine.types import ChatMessage, GenerationRequest, ImageInput, ImagePart, TextPart
from autoglm_server.parity import reference
from autoglm_server.parity.compare import compare
from tests.engine.test_glm4v import MAX_PIXELS, SYSTEM, TOLERANCE, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

STEPS = 8


async def start(*flags: str) -> AsyncEngine:
    settings = load_settings(
        [
            *("--model", "builtin:glm4v-tiny", "--dtype", "float32", "--max-running", "4", "--torch-threads", "1"),
            *("--mm-processor-kwargs", f'{{"max_pixels": {MAX_PIXELS}}}', *flags),
        ]
    )
    engine = AsyncEngine(settings)
    await engine.start()
    return engine


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines() -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    on, off = await start(), await start("--no-enable-prefix-caching")
    yield on, off
    await on.shutdown()
    await off.shutdown()


def agent_step(system: str, turns: int, image: ImageInput) -> list[ChatMessage]:
    """Open-AutoGLM's step `turns`: earlier turns as text (their screenshots dropped), then this step's
    text and its new screenshot: the previous step's prompt up to its screenshot is this one's prefix."""
    messages = [ChatMessage("system", (TextPart(system),))]
    for turn in range(1, turns):
        messages.append(ChatMessage("user", (TextPart(f"Step {turn}: the screen shows the home page"),)))
        messages.append(ChatMessage("assistant", (TextPart(f'do(action="Tap", element=[{turn}00, 300])'),)))
    messages.append(ChatMessage("user", (TextPart(f"Step {turns}: the screen shows the home page"), ImagePart(image))))
    return messages


async def run(engine: AsyncEngine, rid: str, messages: list[ChatMessage]) -> tuple[reference.Run, int]:
    rendered = engine.render_chat(messages)
    request = GenerationRequest(
        request_id=rid,
        prompt_token_ids=rendered.token_ids,
        images=rendered.images,
        max_new_tokens=STEPS,
        ignore_eos=True,
        logprobs=True,
    )
    tokens: list[int] = []
    logprobs: list[float] = []
    cached = -1
    async for delta in await engine.submit(request):
        tokens += delta.token_ids
        logprobs += [item.logprob for item in delta.logprobs]
        if delta.usage is not None:
            cached = delta.usage.cached_prompt_tokens
    return reference.Run(list(rendered.token_ids), tokens, logprobs), cached


def image_start(engine: AsyncEngine, messages: list[ChatMessage]) -> int:
    ids = engine.render_chat(messages).token_ids
    loaded: Any = engine._loaded
    return list(ids).index(int(loaded.model.config.image_token_id))


async def test_agent_steps_with_a_cached_text_prefix_match_the_uncached_engine(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    on, off = engines
    steps = [agent_step(SYSTEM, turn, screenshot(1080, 2400 - 120 * turn)) for turn in (1, 2, 3)]
    before = on.stats().prefix_cache_hits
    for index, messages in enumerate(steps):
        (hit, cached), (miss, uncached) = (
            await run(on, f"step-{index}", messages),
            await run(off, f"s{index}", messages),
        )
        verdict = compare(miss, hit, tolerance=TOLERANCE)
        assert verdict.ok, verdict
        assert uncached == 0
        if index == 0:
            assert cached == 0
        else:  # the previous step's prompt up to its <|begin_of_image|>, in whole blocks of 32
            common = image_start(on, steps[index - 1]) - 1
            assert cached == common - common % BLOCK_TOKENS > 0
    after = on.stats().prefix_cache_hits
    assert before is not None
    assert after is not None
    assert after > before


async def test_hits_and_misses_with_screenshots_batch_together_as_they_run_uncached(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    on, off = engines
    warm = agent_step(SYSTEM + " Be brief.", 1, screenshot(600, 800))
    await run(on, "warm", warm)
    hit = agent_step(SYSTEM + " Be brief.", 2, screenshot(1080, 2400))  # shares warm's text
    miss = agent_step("You operate a tablet. " + SYSTEM, 2, screenshot(600, 800))
    text_only = [ChatMessage("system", (TextPart(SYSTEM + " Be brief."),)), ChatMessage("user", (TextPart("Hi"),))]
    batched = await asyncio.gather(run(on, "hit", hit), run(on, "miss", miss), run(on, "text", text_only))
    alone = [await run(off, rid, m) for rid, m in (("hit", hit), ("miss", miss), ("text", text_only))]
    for (ours, _), (theirs, _) in zip(batched, alone, strict=True):
        verdict = compare(theirs, ours, tolerance=TOLERANCE)
        assert verdict.ok, verdict
    assert batched[0][1] > 0
    assert batched[1][1] == 0
