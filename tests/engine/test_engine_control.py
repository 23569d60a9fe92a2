"""Stop conditions, cancellation, deadlines, overload, out-of-memory and engine death."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import torch

from autoglm_server.engine.types import FinishReason
from autoglm_server.errors import (
    DeadlineExceededError,
    EngineFailedError,
    OutOfMemoryError,
    OverloadedError,
    RequestTooLargeError,
)
from tests.engine.conftest import collect, request, tiny

PROMPT = [72, 101, 108, 108, 111]


async def greedy_output(engine: Any, n: int = 40) -> tuple[list[int], str]:
    tokens, text, _ = await collect(await engine.submit(request("probe", PROMPT, n, ignore_eos=True)))
    return tokens, text


async def test_stop_string_across_token_boundaries_is_never_emitted(make_engine: Any) -> None:
    engine = await make_engine()
    _, text = await greedy_output(engine)
    # Every character of this tokenizer's text is one or more byte tokens: a 3-character stop string
    # taken from the middle of the output spans several tokens.
    stop = text[10:13]
    expected = text[: text.find(stop)]
    deltas = []
    stream = await engine.submit(request("s", PROMPT, 40, ignore_eos=True, stop_strings=("\x00never", stop)))
    async for delta in stream:
        deltas.append(delta)
    assert "".join(d.text for d in deltas) == expected
    assert deltas[-1].finish_reason is FinishReason.STOP_SEQUENCE
    assert deltas[-1].matched_stop == stop
    assert all(stop not in d.text for d in deltas)


async def test_stop_token_and_eos(make_engine: Any) -> None:
    engine = await make_engine()
    tokens, _ = await greedy_output(engine, 10)
    stop_id = tokens[3]
    got, _, last = await collect(
        await engine.submit(request("t", PROMPT, 10, ignore_eos=True, stop_token_ids=frozenset({stop_id})))
    )
    assert got == tokens[: tokens.index(stop_id) + 1]
    assert last.finish_reason is FinishReason.STOP_TOKEN
    # With the same token as EOS of the model (ignore_eos off), the reason is EOS_TOKEN.
    engine._core._eos = frozenset({stop_id})  # the served model's EOS set, swapped for the test
    got, _, last = await collect(await engine.submit(request("e", PROMPT, 10)))
    assert last.finish_reason is FinishReason.EOS_TOKEN
    assert got[-1] == stop_id


async def test_context_limit_ends_with_context_length(make_engine: Any) -> None:
    engine = await make_engine(max_context_length=12)
    tokens, _, last = await collect(await engine.submit(request("c", PROMPT, 50, ignore_eos=True)))
    assert last.finish_reason is FinishReason.CONTEXT_LENGTH
    assert len(PROMPT) + len(tokens) == 12
    with pytest.raises(RequestTooLargeError, match="context"):
        await engine.submit(request("long", list(range(12)), 5))


async def test_too_large_for_the_budget_is_rejected_at_once(make_engine: Any) -> None:
    engine = await make_engine(max_batch_tokens=20)
    with pytest.raises(RequestTooLargeError, match="max-batch-tokens"):
        await engine.submit(request("big", PROMPT, 16))


async def wait_for(predicate: Any) -> None:
    """Poll a condition the engine thread makes true (there is no event to wait on across threads)."""
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_cancel_frees_the_reservation_at_once_and_the_row_within_a_step(make_engine: Any) -> None:
    engine = await make_engine()
    stream = await engine.submit(request("long", PROMPT, 200, ignore_eos=True))
    first = await anext(stream)
    assert first.token_ids
    assert engine.stats().reserved_tokens == len(PROMPT) + 200
    await stream.aclose()  # what a client cancel does to the servicer's iterator
    stats = engine.stats()
    assert (stats.running, stats.reserved_tokens) == (0, 0)
    steps = stats.steps
    await wait_for(lambda: engine._core.batch_rows == 0)
    assert engine.stats().steps <= steps + 2
    # The engine goes on serving.
    tokens, _, _ = await collect(await engine.submit(request("next", PROMPT, 3, ignore_eos=True)))
    assert len(tokens) == 3


async def test_abort_by_id_ends_the_stream_with_cancelled(make_engine: Any) -> None:
    engine = await make_engine()
    stream = await engine.submit(request("x", PROMPT, 500, ignore_eos=True))
    await anext(stream)
    engine.abort("x")
    engine.abort("x")  # idempotent
    _, _, last = await collect(stream)
    assert last.finish_reason is FinishReason.CANCELLED
    assert engine.stats().reserved_tokens == 0


async def test_cancel_while_waiting_frees_the_queue_place(make_engine: Any) -> None:
    engine = await make_engine(max_running=1)
    running = await engine.submit(request("run", PROMPT, 300, ignore_eos=True))
    await anext(running)
    waiting = await engine.submit(request("wait", PROMPT, 5, ignore_eos=True))
    assert engine.stats().waiting == 1
    await waiting.aclose()
    assert engine.stats().waiting == 0
    await running.aclose()


async def test_a_deadline_passing_while_waiting_or_decoding(make_engine: Any) -> None:
    engine = await make_engine(max_running=1)
    soon = time.monotonic() + 0.3
    running = await engine.submit(request("run", PROMPT, 100_000 // 1000 * 2, ignore_eos=True, deadline=soon))
    queued = await engine.submit(request("queued", PROMPT, 5, ignore_eos=True, deadline=time.monotonic() + 0.05))
    with pytest.raises(DeadlineExceededError, match="waited"):
        await collect(queued)
    # Slow the running request down so its deadline passes mid-decode.
    engine.runner.fault_injector = lambda phase: time.sleep(0.02)
    with pytest.raises(DeadlineExceededError):
        await collect(running)
    await wait_for(lambda: engine.stats().reserved_tokens == 0)


async def test_overload_rejects_the_excess_with_a_retry_estimate(make_engine: Any) -> None:
    engine = await make_engine(max_running=2, max_waiting=2)
    streams: list[Any] = []
    rejected: list[OverloadedError] = []
    for i in range(8):  # 4x --max-waiting, all at once
        try:
            streams.append(await engine.submit(request(f"r{i}", PROMPT, 5, ignore_eos=True)))
        except OverloadedError as exc:
            rejected.append(exc)
    assert len(streams) == 4
    assert len(rejected) == 4
    assert all(e.reason == "queue_full" and e.retry_after_s > 0 for e in rejected)
    for stream in streams:
        tokens, _, last = await collect(stream)
        assert last.finish_reason is FinishReason.LENGTH
        assert len(tokens) == 5


async def test_out_of_memory_fails_that_step_and_the_engine_continues(make_engine: Any) -> None:
    engine = await make_engine()
    armed = {"decode": False}

    def inject(phase: str) -> None:
        if phase == "decode" and armed["decode"]:
            armed["decode"] = False
            raise torch.OutOfMemoryError("injected")

    engine.runner.fault_injector = inject
    stream_a = await engine.submit(request("a", PROMPT, 50, ignore_eos=True))
    stream_b = await engine.submit(request("b", PROMPT, 50, ignore_eos=True))
    await anext(stream_a)
    await anext(stream_b)
    armed["decode"] = True
    for stream in (stream_a, stream_b):
        with pytest.raises(OutOfMemoryError):
            await collect(stream)
    stats = engine.stats()
    assert (stats.running, stats.reserved_tokens, stats.alive) == (0, 0, True)
    assert engine._core.batch_rows == 0
    tokens, _, _ = await collect(await engine.submit(request("c", PROMPT, 4, ignore_eos=True)))
    assert tokens == (await greedy_output(engine, 4))[0]


async def test_engine_death_reaches_listeners_and_streams(make_engine: Any) -> None:
    engine = await make_engine()
    died: list[BaseException] = []
    engine.add_fatal_listener(died.append)

    def explode(phase: str) -> None:
        raise RuntimeError("boom")

    engine.runner.fault_injector = explode
    stream = await engine.submit(request("a", PROMPT, 5))
    with pytest.raises(EngineFailedError):
        await collect(stream)
    await wait_for(lambda: bool(died))
    assert isinstance(died[0], RuntimeError)
    assert engine.stats().alive is False
    with pytest.raises(EngineFailedError):
        await engine.submit(request("b", PROMPT, 5))


async def test_slow_consumer_gets_merged_deltas(make_engine: Any) -> None:
    engine = await make_engine()
    fast_stream = await engine.submit(request("fast", PROMPT, 30, ignore_eos=True))
    slow_stream = await engine.submit(request("slow", PROMPT, 30, ignore_eos=True))
    fast = await collect(fast_stream)
    chunks = []
    async for delta in slow_stream:  # read only after the other finished: its deltas were merged
        chunks.append(delta)
    assert sum(len(c.token_ids) for c in chunks) == 30
    assert len(chunks) < 30
    assert [t for c in chunks for t in c.token_ids] == fast[0]
    assert tiny("llama").description.model_id == engine.model.model_id
