"""Regressions: an aborted waiting request's stream ends; a reused request_id gets none of the old one's output."""

from __future__ import annotations

import asyncio
from typing import Any

from autoglm_server.engine.types import FinishReason
from tests.engine.conftest import collect, request

PROMPT = [72, 101, 108, 108, 111]


async def test_abort_of_a_waiting_request_ends_its_open_stream(make_engine: Any) -> None:
    # The drain aborts in-flight streams by id; one still queued for a row must end too, not hang.
    engine = await make_engine(max_running=1)
    busy = await engine.submit(request("busy", PROMPT, 200, ignore_eos=True))
    await busy.__anext__()  # "busy" holds the only row
    queued = await engine.submit(request("queued", PROMPT, 8))
    engine.abort("queued")
    async with asyncio.timeout(10):
        tokens, _, last = await collect(queued)
    assert tokens == []
    assert last.finish_reason is FinishReason.CANCELLED
    assert last.usage is not None
    assert last.usage.completion_tokens == 0
    await busy.aclose()


async def test_a_request_id_reused_after_a_cancel_gets_only_its_own_output(make_engine: Any) -> None:
    engine = await make_engine()
    first = await engine.submit(request("same", PROMPT, 200, ignore_eos=True))
    await first.__anext__()
    await first.aclose()  # the client cancels; the row leaves the batch at the next step
    # A retry with the same id at once: the old row's CANCELLED end must not reach the new stream.
    second = await engine.submit(request("same", PROMPT, 5, ignore_eos=True))
    async with asyncio.timeout(10):
        tokens, _, last = await collect(second)
    assert last.finish_reason is FinishReason.LENGTH
    assert len(tokens) == 5
