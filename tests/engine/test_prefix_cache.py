"""The built-in engine's prefix cache on builtin:tiny (float32, temperature 0): the same tokens and
chosen-token logprobs (within 1e-5) as with the cache off, the counters, a batch mixing hits and
misses, eviction under a small KV budget, and a cancelled stream leaving the cache usable.

Real engines on real models throughout: two AsyncEngines (cache on / off), and for the steps that
must land in one prefill group, an EngineCore stepped by the test itself (no engine thread), so the
grouping does not depend on timing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import torch

from autoglm_server.engine import builtin_models
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.core import EngineCore
from autoglm_server.engine.builtin.prefix_cache import BLOCK_TOKENS, Hit, PrefixCache
from autoglm_server.engine.builtin.runner import ModelRunner
from autoglm_server.engine.builtin.scheduler import Limits
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import GenerationDelta, GenerationRequest
from autoglm_server.errors import AutoglmError

pytestmark = pytest.mark.timeout(300)
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

TOLERANCE = 1e-5


def prompt_tokens(seed: int, length: int) -> list[int]:
    """Byte tokens (0-255) drawn from `seed`: each test uses prefixes no other test caches."""
    rng = random.Random(seed)
    return [rng.randrange(256) for _ in range(length)]


def request(rid: str, prompt: list[int], max_new_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(
        request_id=rid, prompt_token_ids=tuple(prompt), max_new_tokens=max_new_tokens, ignore_eos=True, logprobs=True
    )


class Run:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.last = GenerationDelta()

    def add(self, delta: GenerationDelta) -> None:
        self.tokens += delta.token_ids
        self.logprobs += [item.logprob for item in delta.logprobs]
        self.last = delta

    @property
    def cached(self) -> int:
        assert self.last.usage is not None
        return self.last.usage.cached_prompt_tokens


async def run(engine: AsyncEngine, rid: str, prompt: list[int], max_new_tokens: int = 12) -> Run:
    out = Run()
    async for delta in await engine.submit(request(rid, prompt, max_new_tokens)):
        out.add(delta)
    assert out.last.finished
    return out


def assert_same(cached: Run, uncached: Run) -> None:
    assert cached.tokens == uncached.tokens
    assert len(cached.logprobs) == len(uncached.logprobs) == len(cached.tokens)
    gap = max(abs(a - b) for a, b in zip(cached.logprobs, uncached.logprobs, strict=True))
    assert gap <= TOLERANCE, gap


def settings(**kw: Any) -> EngineSettings:
    return EngineSettings(model="builtin:tiny", dtype="float32", torch_threads=1, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines() -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    on, off = AsyncEngine(settings()), AsyncEngine(settings(enable_prefix_caching=False))
    await on.start()
    await off.start()
    yield on, off
    await on.shutdown()
    await off.shutdown()


@MODULE_LOOP
async def test_prompts_sharing_a_prefix_match_the_uncached_engine(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    on, off = engines
    system = prompt_tokens(1, 230)  # 7 whole blocks
    turns = [system + prompt_tokens(10 + i, 5 + 17 * i) for i in range(3)]
    before = on.stats()
    cached = [await run(on, f"shared-{i}", turn) for i, turn in enumerate(turns)]
    uncached = [await run(off, f"shared-{i}", turn) for i, turn in enumerate(turns)]
    for hit, miss in zip(cached, uncached, strict=True):
        assert_same(hit, miss)
    assert [r.cached for r in cached] == [0, 7 * BLOCK_TOKENS, 7 * BLOCK_TOKENS]
    assert [r.cached for r in uncached] == [0, 0, 0]
    after = on.stats()
    assert before.prefix_cache_queries is not None
    assert after.prefix_cache_queries is not None
    assert before.prefix_cache_hits is not None
    assert after.prefix_cache_hits is not None
    assert after.prefix_cache_queries - before.prefix_cache_queries == sum(len(t) for t in turns)
    assert after.prefix_cache_hits - before.prefix_cache_hits == 14 * BLOCK_TOKENS
    assert off.stats().prefix_cache_queries is None  # --no-enable-prefix-caching: no cache, no counters


@MODULE_LOOP
async def test_the_hit_counter_moves_on_the_second_request(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    on, _ = engines
    prompt = prompt_tokens(2, 100)
    hits = [on.stats().prefix_cache_hits]
    for rid in ("first", "second"):
        await run(on, rid, prompt, 2)
        hits.append(on.stats().prefix_cache_hits)
    assert hits[0] is not None
    assert hits[1] is not None
    assert hits[2] is not None
    assert hits[1] == hits[0]  # nothing cached yet
    assert hits[2] - hits[1] == 96  # 3 whole blocks; the last 4 tokens are prefilled again
    held = on.stats().prefix_cache_tokens
    assert held is not None
    assert held >= 96


@MODULE_LOOP
async def test_a_cancelled_stream_leaves_the_cache_usable(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    on, off = engines
    prefix = prompt_tokens(3, 200)
    stream = await on.submit(request("long", [*prefix, 7], max_new_tokens=1000))
    first = await anext(aiter(stream))
    assert first.token_ids
    await stream.aclose()
    for _ in range(200):  # the cancel reaches the engine at its next step
        if on.stats().running == 0:
            break
        await asyncio.sleep(0.01)
    assert on.stats().running == 0
    follow = prefix + prompt_tokens(4, 9)
    hit, miss = await run(on, "after-cancel", follow), await run(off, "after-cancel", follow)
    assert hit.cached == 192
    assert_same(hit, miss)


@MODULE_LOOP
async def test_a_small_budget_evicts_and_serves_what_the_uncached_engine_serves() -> None:
    """Budget 600 tokens: the cache fills it between requests, and two requests that together need
    596 are both admitted at once (the cache gives its room back) and match the uncached engine."""
    budget = 600
    on = AsyncEngine(settings(max_batch_tokens=budget))
    off = AsyncEngine(settings(max_batch_tokens=budget, enable_prefix_caching=False))
    await on.start()
    await off.start()
    try:
        for i in range(4):  # each request's prompt is kept, the older ones evicted
            prompt = prompt_tokens(100 + i, 250)
            assert_same(await run(on, f"fill-{i}", prompt, 8), await run(off, f"fill-{i}", prompt, 8))
            stats = on.stats()
            assert stats.prefix_cache_tokens is not None
            assert 0 < stats.prefix_cache_tokens <= budget
        pair = [prompt_tokens(200, 290), prompt_tokens(201, 290)]
        cached = await asyncio.gather(*(run(on, f"pair-{i}", p, 8) for i, p in enumerate(pair)))
        uncached = await asyncio.gather(*(run(off, f"pair-{i}", p, 8) for i, p in enumerate(pair)))
        for hit, miss in zip(cached, uncached, strict=True):
            assert_same(hit, miss)
        stats = on.stats()
        assert stats.prefix_cache_tokens is not None
        assert stats.prefix_cache_tokens <= budget
        assert stats.prefix_cache_tokens == 0  # with 596 reserved, 4 tokens of room: no whole block
        # Alone, a request's prompt is kept again, and the next one that starts the same finds it.
        assert (await run(on, "again", pair[1] + [1, 2, 3], 8)).cached == 0
        assert (await run(on, "again-2", pair[1] + [4, 5, 6], 8)).cached == 288
    finally:
        await on.shutdown()
        await off.shutdown()


# ----------------------------------------------------------- one core, stepped by the test
def core(prefix_cache: PrefixCache | None, budget: int = 1 << 20) -> EngineCore:
    tokenizer, model, _ = builtin_models.build("builtin:tiny")
    limits = Limits(max_running=8, max_waiting=16, token_budget=budget, max_queue_time_s=600)
    return EngineCore(ModelRunner(model), tokenizer, (tokenizer.eos_token_id,), 2048, limits, 0.0, prefix_cache)


def drive(engine: EngineCore, requests: list[GenerationRequest]) -> dict[str, Run]:
    """Add all requests before the first step, so they are admitted together, and step to the end."""
    for item in requests:
        engine.add(item)
    runs = {item.request_id: Run() for item in requests}
    for _ in range(500):
        for rid, out in engine.step():
            assert not isinstance(out, AutoglmError), out
            runs[rid].add(out)
        if all(r.last.finished for r in runs.values()):
            return runs
    raise AssertionError("the requests did not finish")


def test_a_batch_mixing_hits_and_misses_decodes_as_without_the_cache() -> None:
    torch.set_num_threads(1)
    cache = PrefixCache()
    on, off = core(cache), core(None)
    shared = [prompt_tokens(300, 96), prompt_tokens(301, 160)]
    warm = [request(f"warm-{i}", p, 2) for i, p in enumerate(shared)]
    drive(on, warm)
    assert cache.tokens == 256
    groups: list[list[int]] = []
    prefill = on.runner.prefill

    def recording(prompts: Any, images: Any = (), prefixes: Any = ()) -> Any:
        groups.append([hit.tokens for hit in prefixes])
        return prefill(prompts, images, prefixes)

    on.runner.prefill = recording  # type: ignore[method-assign]
    # Every prompt leaves 40 to 47 tokens to prefill, so that all land in one prefill group: two hits
    # with different cached lengths (a gap between prefix and rest in the shorter row) and two misses.
    mixed = [
        request("hit-96", shared[0] + prompt_tokens(310, 40)),
        request("hit-160", shared[1] + prompt_tokens(311, 44)),
        request("miss-47", prompt_tokens(312, 47)),
        request("miss-45", prompt_tokens(313, 45), max_new_tokens=20),
    ]
    cached, uncached = drive(on, mixed), drive(off, mixed)
    assert sorted(groups[0]) == [0, 0, 96, 160], groups
    for rid in cached:
        assert_same(cached[rid], uncached[rid])
    assert [cached[r.request_id].cached for r in mixed] == [96, 160, 0, 0]


def test_admission_evicts_the_cache_to_keep_it_within_the_budget() -> None:
    torch.set_num_threads(1)
    budget = 800
    cache = PrefixCache()
    engine = core(cache, budget)
    for i in range(3):  # one at a time: each leaves its 192 tokens
        drive(engine, [request(f"fill-{i}", prompt_tokens(400 + i, 200), 2)])
    assert cache.tokens == 3 * 192
    # Two requests reserving 2 x 328: admitted together, the cache keeps at most the 144 left.
    for item in (request("a", prompt_tokens(410, 320), 8), request("b", prompt_tokens(411, 320), 8)):
        engine.add(item)
    engine.step()
    assert engine.scheduler.running == 2
    assert engine.scheduler.reserved_tokens + cache.tokens <= budget
    assert cache.tokens == 128  # 144 tokens of room: 4 whole blocks, the newest prompt's first ones
    assert cache.lookup(prompt_tokens(411, 320)).tokens == 128


def test_lru_evicts_a_chain_from_its_end() -> None:
    cache = PrefixCache(block_tokens=2)
    block = ((torch.zeros(1, 2, 1), torch.zeros(1, 2, 1)),)
    cache.store([1, 2, 3, 4, 5, 6], 0, lambda start: block, room=100)
    cache.store([7, 8], 0, lambda start: block, room=100)
    cache.lookup([1, 2, 3, 4, 5, 6, 9])  # the older chain is used again: its root is now the newest
    cache.evict_to(4)
    assert cache.lookup([1, 2, 3, 4, 5, 6, 9]).tokens == 4  # the end went, the root stays reachable
    assert cache.lookup([7, 8, 9]).tokens == 0


def test_the_reusable_prefix_stops_at_the_first_image_token() -> None:
    image = 999
    cache = PrefixCache(stop_token=image, block_tokens=4)
    block = ((torch.zeros(1, 4, 1), torch.zeros(1, 4, 1)),)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, image, image, 10, 11, 12, 13, 14]
    assert cache.cacheable(prompt) == 8
    cache.store(prompt, 0, lambda start: block, room=100)
    assert cache.tokens == 8
    # The same text before another image (other pixels): the text is reused, the image never.
    assert cache.lookup([1, 2, 3, 4, 5, 6, 7, 8, 9, image, 10]) == Hit((block, block), 8)
