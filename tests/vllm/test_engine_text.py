"""The vLLM engine through the Engine protocol, over a tiny random-weight Llama.

One engine for the module (vLLM takes 40-60 s to start on two cores); the tests leave it idle, and
the last two kill its engine core and shut it down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

from autoglm_server.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    ImageInput,
    ImagePart,
    SamplingOptions,
    TextPart,
)
from autoglm_server.engine.vllm.engine import VllmEngine
from autoglm_server.errors import (
    DeadlineExceededError,
    EngineFailedError,
    InvalidRequestError,
    OverloadedError,
    RequestTooLargeError,
)
from tests.vllm.support import THIRD_PARTY_WARNINGS, alive, settings

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
    *(pytest.mark.filterwarnings(rule) for rule in THIRD_PARTY_WARNINGS),
]

PROMPT = tuple(range(32, 96))
REFERENCE_TOKENS = 24


@pytest.fixture(scope="module")
def reference(llama_dir: Path) -> subprocess.Popen[str]:
    """vLLM's own LLM.generate on PROMPT, started beside the engine (both take a while to start)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.vllm.reference", str(llama_dir), json.dumps(PROMPT), str(REFERENCE_TOKENS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()  # reaps it and closes its pipe


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(llama_dir: Path, reference: subprocess.Popen[str]) -> AsyncIterator[VllmEngine]:
    eng = VllmEngine(settings(str(llama_dir), max_running=4, max_waiting=4))
    await eng.start()
    yield eng
    await eng.shutdown()


def request(request_id: str, max_new_tokens: int = 16, **fields: Any) -> GenerationRequest:
    fields.setdefault("ignore_eos", True)
    return GenerationRequest(request_id=request_id, prompt_token_ids=PROMPT, max_new_tokens=max_new_tokens, **fields)


async def collect(eng: VllmEngine, req: GenerationRequest) -> list[GenerationDelta]:
    return [delta async for delta in await eng.submit(req)]


def tokens(deltas: list[GenerationDelta]) -> list[int]:
    return [token for delta in deltas for token in delta.token_ids]


async def wait_idle(eng: VllmEngine, timeout_s: float = 30.0) -> None:
    """Until vLLM holds no request: its front end has none unfinished and its scheduler none."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = eng.stats()
        if eng.llm.output_processor.get_num_unfinished_requests() == 0 and stats.running == stats.waiting == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"vLLM still holds requests: {eng.stats()}")


async def test_describes_the_model(engine: VllmEngine) -> None:
    model = engine.model
    assert model.architecture == "LlamaForCausalLM"
    assert model.max_context_length == 2048
    assert model.vocab_size == 259
    assert model.eos_token_ids == (257,)
    assert model.has_chat_template
    assert not model.supports_images
    assert engine.tokenize("ab", add_special_tokens=False) == [97, 98]


async def test_greedy_equals_vllm_llm_generate(engine: VllmEngine, reference: subprocess.Popen[str]) -> None:
    deltas = await collect(engine, request("greedy", REFERENCE_TOKENS))
    out, _ = await asyncio.to_thread(reference.communicate, timeout=600)
    lines = [line for line in out.splitlines() if line.startswith("REFERENCE ")]
    assert lines, "the reference subprocess printed no result"
    assert tokens(deltas) == json.loads(lines[0].removeprefix("REFERENCE "))
    last = deltas[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(PROMPT)
    assert last.usage.completion_tokens == REFERENCE_TOKENS
    assert last.usage.time_to_first_token_s is not None


async def test_stop_token_and_stop_string(engine: VllmEngine) -> None:
    full = tokens(await collect(engine, request("free", 24)))
    stop_at = next(i for i in range(4, len(full)) if full[i] not in full[:i])
    deltas = await collect(engine, request("stop-token", 24, stop_token_ids=frozenset({full[stop_at]})))
    assert deltas[-1].finish_reason is FinishReason.STOP_TOKEN
    assert tokens(deltas)[:stop_at] == full[:stop_at]

    text = "".join(d.text for d in await collect(engine, request("free-text", 24)))
    cut = next(
        i for i in range(3, len(text)) if text[i].isprintable() and text[i] != "\ufffd" and text[i] not in text[:i]
    )
    deltas = await collect(engine, request("stop-string", 24, stop_strings=(text[cut],)))
    assert deltas[-1].finish_reason is FinishReason.STOP_SEQUENCE
    assert deltas[-1].matched_stop == text[cut]
    assert "".join(d.text for d in deltas) == text[:cut]


async def test_seeds_and_penalties_reach_vllm(engine: VllmEngine) -> None:
    def sampled(seed: int) -> GenerationRequest:
        return request(f"seed-{seed}", 24, sampling=SamplingOptions(temperature=1.0, seed=seed))

    first = tokens(await collect(engine, sampled(7)))
    assert tokens(await collect(engine, sampled(7))) == first
    assert tokens(await collect(engine, sampled(8))) != first

    greedy = tokens(await collect(engine, request("plain", 48)))
    assert len(set(greedy)) < len(greedy), "a random model's greedy output repeats tokens"
    penalized = tokens(await collect(engine, request("penalty", 48, sampling=SamplingOptions(frequency_penalty=2.0))))
    assert penalized != greedy
    repeated = tokens(await collect(engine, request("rep", 48, sampling=SamplingOptions(repetition_penalty=1.8))))
    assert repeated != greedy


async def test_logprobs(engine: VllmEngine) -> None:
    deltas = await collect(engine, request("logprobs", 6, logprobs=True, top_logprobs=2))
    entries = [entry for delta in deltas for entry in delta.logprobs]
    assert [entry.token_id for entry in entries] == tokens(deltas)
    for entry in entries:
        assert len(entry.top) == 2
        assert entry.top[0][1] >= entry.top[1][1]
        assert entry.logprob <= 0.0


async def test_a_repeated_long_prompt_reports_prefix_cache_hits(engine: VllmEngine) -> None:
    # The fixture keeps vLLM's prefix caching on (the settings default). vLLM caches whole KV blocks
    # only and always computes the last prompt token, so the repeat hits every full block but that.
    block = engine.llm.vllm_config.cache_config.block_size
    # Starts unlike PROMPT (which earlier tests sent) so nothing of it can be cached before the first run.
    long_prompt = tuple(200 - (i % 150) for i in range(3 * block + 5))
    runs = []
    for run in ("cold", "warm"):
        req = GenerationRequest(request_id=f"prefix-{run}", prompt_token_ids=long_prompt, max_new_tokens=4)
        runs.append((await collect(engine, req))[-1].usage)
    cold, warm = runs
    assert cold is not None
    assert warm is not None
    assert cold.prompt_tokens == warm.prompt_tokens == len(long_prompt)
    assert cold.cached_prompt_tokens == 0
    assert 0 < warm.cached_prompt_tokens < len(long_prompt)
    assert warm.cached_prompt_tokens % block == 0, (warm.cached_prompt_tokens, block)


async def test_cancel_frees_vllm_slot(engine: VllmEngine) -> None:
    stream = await engine.submit(request("cancel-me", 1500))
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_idle(engine)
    # The same request id right away gets a fresh request, never the old one's output.
    deltas = await collect(engine, request("cancel-me", 4))
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert len(tokens(deltas)) == 4
    await wait_idle(engine)


async def test_abort_by_id_ends_with_cancelled(engine: VllmEngine) -> None:
    stream = await engine.submit(request("abort-me", 1500))
    await anext(stream)
    engine.abort("abort-me")
    rest = [delta async for delta in stream]
    assert rest[-1].finish_reason is FinishReason.CANCELLED
    await wait_idle(engine)


async def test_deadline_frees_vllm_slot(engine: VllmEngine) -> None:
    stream = await engine.submit(request("late", 1500, deadline=time.monotonic() + 1.0))
    with pytest.raises(DeadlineExceededError):
        async for _ in stream:
            pass
    await wait_idle(engine)


async def test_cancel_during_add_request_leaks_nothing(engine: VllmEngine) -> None:
    """vLLM issue #57061: a cancel that lands while add_request awaits must leave no request behind."""
    for yields in range(8):
        task = asyncio.create_task(engine.submit(request(f"racy-{yields}", 1500)))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(results[0], BaseException):  # submit won the race: the stream owns it
            await results[0].aclose()  # type: ignore[attr-defined]
    await wait_idle(engine)
    assert engine._admission.in_flight == 0
    assert not engine._keys
    assert len(tokens(await collect(engine, request("after-race", 4)))) == 4


async def test_overload_is_refused_before_vllm_queues_it(engine: VllmEngine) -> None:
    streams = [await engine.submit(request(f"load-{i}", 1500)) for i in range(8)]  # 4 running + 4 waiting
    try:
        with pytest.raises(OverloadedError) as refused:
            await engine.submit(request("one-too-many", 4))
        assert refused.value.reason == "queue_full"
        assert refused.value.retry_after_s > 0
        assert engine.llm.output_processor.get_num_unfinished_requests() == 8
    finally:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
    await wait_idle(engine)


async def test_requests_that_cannot_fit(engine: VllmEngine) -> None:
    with pytest.raises(RequestTooLargeError):
        await engine.submit(GenerationRequest(request_id="huge", prompt_token_ids=(65,) * 2048, max_new_tokens=1))
    near_end = GenerationRequest(
        request_id="near-end", prompt_token_ids=(65,) * 2040, max_new_tokens=100, ignore_eos=True
    )
    deltas = await collect(engine, near_end)
    assert deltas[-1].finish_reason is FinishReason.CONTEXT_LENGTH
    assert len(tokens(deltas)) == 8
    assert engine.stats().prefix_cache_queries is not None


async def test_render_chat_refuses_images_on_a_text_model(engine: VllmEngine) -> None:
    from PIL import Image

    rendered = engine.render_chat([ChatMessage("user", (TextPart("hi"),))])
    assert rendered.text.endswith("<|assistant|>\n")
    image = ImageInput(Image.new("RGB", (8, 8)), "image/png", 8, 8, 10, "0" * 64)
    with pytest.raises(InvalidRequestError):
        engine.render_chat([ChatMessage("user", (ImagePart(image), TextPart("hi")))])


async def test_engine_core_death_reaches_the_fatal_listener(engine: VllmEngine) -> None:
    died = asyncio.Event()
    engine.add_fatal_listener(lambda exc: died.set())
    stream = await engine.submit(request("doomed", 1500))
    await anext(stream)
    core = min(engine.child_pids_named("VLLM::EngineCore"))
    os.kill(core, signal.SIGKILL)
    await asyncio.wait_for(died.wait(), 30)
    with pytest.raises(EngineFailedError):
        async for _ in stream:
            pass
    with pytest.raises(EngineFailedError):
        await engine.submit(request("after-death", 4))
    assert not engine.stats().alive


async def test_shutdown_leaves_no_process(engine: VllmEngine) -> None:
    pids = engine.child_pids
    assert pids
    await engine.shutdown()
    assert alive(pids) == []
