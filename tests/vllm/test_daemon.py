"""The daemon with --engine vllm over the tiny GLM-4.1V: both front doors, Open-AutoGLM's request,
overload, vLLM's priority queue, metrics, drain.

One daemon for the module (a vLLM start takes 40-60 s here), with one batch row and two queue places
so that overload and queue order are easy to provoke; the last test stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

import openai
import psutil
from openai import AsyncOpenAI, OpenAI
from PIL import Image

from autoglm_client import AsyncClient, Client, ResourceExhaustedError
from autoglm_client.types import Chunk, Finished, FinishReason, Started
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.scrape import Snapshot, counts_delta, scrape
from tests.vllm.support import TEST_VLLM_ARGS, alive

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

# Open-AutoGLM's system prompt is ~2,500 characters of rules; a shorter stand-in of the same shape.
SYSTEM_PROMPT = "You are a phone-operating agent. Reply with do(action=...) or finish(message=...). " * 8

MAX_RUNNING = 1
MAX_WAITING = 2
# A stream that outlasts every check made while it runs (the tiny model's context is 8,192 tokens);
# the tests cancel it rather than wait for it.
LONG_STREAM = 8000


def screenshot_data_url() -> str:
    image = Image.new("RGB", (1080, 2400), (250, 250, 250))
    for row in range(0, 2400, 150):
        image.paste((20, 120, 220), (60, row + 30, 1020, row + 110))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def daemon(glm_dir: Path) -> Iterator[Daemon]:
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    with running_daemon(
        "--engine",
        "vllm",
        "--model",
        str(glm_dir),
        "--auth",
        "disabled",
        "--dtype",
        "bfloat16",
        "--max-running",
        str(MAX_RUNNING),
        "--max-waiting",
        str(MAX_WAITING),
        "--max-new-tokens-limit",
        str(LONG_STREAM),
        "--mm-processor-kwargs",
        '{"max_pixels": 5000000}',
        "--drain-timeout",
        "30",
        *vllm_args,
        timeout=600,
    ) as running:
        yield running


def test_grpc_generate_streams(daemon: Daemon) -> None:
    with Client(daemon.target, timeout=120) as client:
        events = list(client.generate("Open the settings app.", max_new_tokens=8, ignore_eos=True))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert sum(len(event.token_ids) for event in events if isinstance(event, Chunk)) == 8


def test_openai_sdk_streams_an_open_autoglm_request(daemon: Daemon) -> None:
    client = OpenAI(base_url=daemon.http_url, api_key="unused", timeout=300)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": screenshot_data_url()}},
                    {"type": "text", "text": "Task: open the settings app. What is the next action?"},
                ],
            },
        ],
        temperature=0.0,
        top_p=0.85,
        frequency_penalty=0.2,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    usage = next(chunk.usage for chunk in chunks if chunk.usage is not None)
    assert finishes == ["length"]
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens > 3000  # the screenshot's 3,108 image tokens are counted
    assert isinstance(text, str)


def test_a_repeated_prompt_reports_its_cached_tokens_at_both_doors(daemon: Daemon) -> None:
    # Prefix caching is on by default: the second identical prompt finds its full KV blocks cached,
    # and both front doors say how many prompt tokens came from the cache.
    prompt = SYSTEM_PROMPT + "Task: open the clock app."
    with Client(daemon.target, timeout=120) as client:
        finishes = [
            next(e for e in client.generate(prompt, max_new_tokens=2, ignore_eos=True) if isinstance(e, Finished))
            for _ in range(2)
        ]
    first, second = (f.usage for f in finishes)
    assert second.prompt_tokens == first.prompt_tokens > 256
    assert 0 < second.cached_prompt_tokens < second.prompt_tokens

    client_http = OpenAI(base_url=daemon.http_url, api_key="unused", timeout=120)
    model = client_http.models.list().data[0].id
    completion = client_http.completions.create(model=model, prompt=prompt, max_tokens=2)
    details = completion.usage.prompt_tokens_details if completion.usage else None
    assert details is not None
    assert details.cached_tokens == second.cached_prompt_tokens


@dataclass
class Watched:
    """What one stream did, and when (time.monotonic)."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    first_token: asyncio.Event = field(default_factory=asyncio.Event)
    first_token_at: float | None = None
    tokens: int = 0


async def follow(client: AsyncClient, prompt: str, watched: Watched, *, max_new_tokens: int, priority: int = 0) -> None:
    """Run one gRPC Generate stream to its end (or until the task is cancelled), noting its events."""
    stream = client.generate(prompt, max_new_tokens=max_new_tokens, ignore_eos=True, priority=priority)
    async with contextlib.aclosing(stream):
        async for event in stream:
            now = time.monotonic()
            if isinstance(event, Started):
                watched.started.set()
            elif isinstance(event, Chunk) and event.token_ids:
                if watched.first_token_at is None:
                    watched.first_token_at = now
                    watched.first_token.set()
                watched.tokens += len(event.token_ids)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def vllm_gauges(snapshot: Snapshot) -> tuple[float, float]:
    """(running, waiting) as vLLM's scheduler last reported them (the daemon's engine gauges)."""
    return snapshot.value("autoglm_requests_running"), snapshot.value("autoglm_requests_waiting")


async def wait_for_metrics(
    daemon: Daemon, ready: Callable[[Snapshot], bool], what: str, timeout_s: float = 60.0
) -> Snapshot:
    """Scrape /metrics until `ready` holds; fail with the last gauges after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot = await asyncio.to_thread(scrape, daemon.admin_url)
        if ready(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: (running, waiting) is {vllm_gauges(snapshot)} after {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_overload_is_refused_at_both_front_doors_before_vllm_queues_it(daemon: Daemon) -> None:
    full = (MAX_RUNNING, MAX_WAITING)
    before = await asyncio.to_thread(scrape, daemon.admin_url)
    http = AsyncOpenAI(base_url=daemon.http_url, api_key="unused", timeout=120, max_retries=0)
    async with http, AsyncClient(daemon.target, timeout=300, retry=None) as client:
        model = (await http.models.list()).data[0].id
        load = [Watched() for _ in range(MAX_RUNNING + MAX_WAITING)]
        tasks = [
            asyncio.create_task(follow(client, f"Long stream {i}.", watched, max_new_tokens=LONG_STREAM))
            for i, watched in enumerate(load)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(watched.started.wait() for watched in load)), 120)
            saturated = await wait_for_metrics(
                daemon, lambda s: vllm_gauges(s) == full, "vLLM does not hold the admitted streams"
            )
            assert saturated.value("autoglm_kv_cache_usage_ratio") > 0

            with pytest.raises(ResourceExhaustedError) as refused:
                async for _ in client.generate("One too many.", max_new_tokens=4):
                    pass
            assert refused.value.retry_after is not None
            assert refused.value.retry_after > 0

            with pytest.raises(openai.RateLimitError) as limited:
                await http.completions.create(model=model, prompt="One too many.", max_tokens=4)
            assert limited.value.status_code == 429
            assert int(limited.value.response.headers["retry-after"]) >= 1
            assert int(limited.value.response.headers["retry-after-ms"]) > 0

            # Had vLLM been handed either refused request, its scheduler would report it within a
            # step or two: let a few more steps pass, then its queue must still hold just the load.
            steps = saturated.value("autoglm_engine_steps_total")
            after = await wait_for_metrics(
                daemon, lambda s: s.value("autoglm_engine_steps_total") >= steps + 5, "vLLM took no more steps"
            )
            assert vllm_gauges(after) == full
            assert counts_delta(before, after, "autoglm_rejections_total", "protocol", reason="queue_full") == {
                "grpc": 1.0,
                "http": 1.0,
            }
            assert not any(task.done() for task in tasks), "a long stream ended before the checks were done"
        finally:
            await cancel_all(tasks)

        await wait_for_metrics(daemon, lambda s: vllm_gauges(s) == (0, 0), "the daemon did not return to idle")
        result = await client.generate_text("Serve again.", max_new_tokens=4, ignore_eos=True)
        assert len(result.token_ids) == 4
        completion = await http.completions.create(
            model=model, prompt="Serve again.", max_tokens=4, extra_body={"ignore_eos": True}
        )
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 4


async def test_vllm_serves_a_higher_priority_request_first(daemon: Daemon) -> None:
    occupant, low, high = Watched(), Watched(), Watched()
    tasks: list[asyncio.Task[None]] = []
    async with AsyncClient(daemon.target, timeout=300, retry=None) as client:
        try:
            # The highest priority of the three, so that nothing could push it off the only row.
            holder = asyncio.create_task(
                follow(client, "Occupy the only row.", occupant, max_new_tokens=LONG_STREAM, priority=100)
            )
            tasks.append(holder)
            await asyncio.wait_for(occupant.first_token.wait(), 120)

            # A first, then B; each is admitted and seen waiting in vLLM's queue before the next.
            tasks.append(asyncio.create_task(follow(client, "Low priority.", low, max_new_tokens=8, priority=-10)))
            await asyncio.wait_for(low.started.wait(), 60)
            await wait_for_metrics(daemon, lambda s: vllm_gauges(s) == (1, 1), "A is not in vLLM's queue")
            tasks.append(asyncio.create_task(follow(client, "High priority.", high, max_new_tokens=8, priority=10)))
            await asyncio.wait_for(high.started.wait(), 60)
            await wait_for_metrics(daemon, lambda s: vllm_gauges(s) == (1, 2), "B is not in vLLM's queue")
            assert not holder.done(), "the first request ended before A and B both waited"
            assert low.first_token_at is None
            assert high.first_token_at is None

            await cancel_all([holder])  # frees the row: vLLM now picks from its queue of A and B
            await asyncio.wait_for(asyncio.gather(*tasks[1:]), 120)
        finally:
            await cancel_all(tasks)
    assert (low.tokens, high.tokens) == (8, 8)
    assert high.first_token_at is not None
    assert low.first_token_at is not None
    assert high.first_token_at < low.first_token_at, "vLLM served A, queued first, before the higher-priority B"
    await wait_for_metrics(daemon, lambda s: vllm_gauges(s) == (0, 0), "the daemon did not return to idle")


def test_metrics_carry_both_front_doors_and_vllm_kv_cache(daemon: Daemon) -> None:
    snapshot = scrape(daemon.admin_url)
    for name in (
        "autoglm_requests_total",
        "autoglm_time_to_first_token_seconds_count",
        "autoglm_generated_tokens_total",
    ):
        by_protocol = snapshot.by_label(name, "protocol")
        assert by_protocol.get("grpc", 0) > 0, name
        assert by_protocol.get("http", 0) > 0, name
    assert "autoglm_kv_cache_usage_ratio" in snapshot.names()
    assert 0.0 <= snapshot.value("autoglm_kv_cache_usage_ratio") <= 1.0


def test_sigterm_drains_and_leaves_no_vllm_process(daemon: Daemon) -> None:
    descendants = [child.pid for child in psutil.Process(daemon.process.pid).children(recursive=True)]
    assert any("VLLM::EngineCore" in " ".join(psutil.Process(pid).cmdline()) for pid in descendants)
    started = threading.Event()
    events: list[object] = []

    def stream_during_drain() -> None:
        with Client(daemon.target, timeout=120) as client:
            for event in client.generate("Keep going.", max_new_tokens=48, ignore_eos=True):
                events.append(event)
                started.set()

    worker = threading.Thread(target=stream_during_drain)
    worker.start()
    assert started.wait(120), "the stream did not start"
    daemon.signal(signal.SIGTERM)  # while the stream is in flight
    worker.join(120)
    assert daemon.wait(120) == 0
    assert isinstance(events[-1], Finished), "the in-flight stream was not drained to its end"
    assert sum(len(event.token_ids) for event in events if isinstance(event, Chunk)) == 48
    assert alive(descendants) == []
