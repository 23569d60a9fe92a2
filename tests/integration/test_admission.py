"""Overload through the real daemon: the excess gets RESOURCE_EXHAUSTED with RetryInfo at once."""

from __future__ import annotations

import asyncio

import grpc

from autoglm_client import AsyncClient, ResourceExhaustedError
from tests.helpers.daemon import running_daemon

MAX_RUNNING = 2
MAX_WAITING = 4
NEW_TOKENS = 200


async def _one(client: AsyncClient, index: int) -> object:
    try:
        return await client.generate_text(f"request {index}", max_new_tokens=NEW_TOKENS, ignore_eos=True)
    except ResourceExhaustedError as error:
        return error


def test_four_times_max_waiting_rejects_the_excess_with_retry_info() -> None:
    args = ("--auth", "disabled", "--max-running", str(MAX_RUNNING), "--max-waiting", str(MAX_WAITING))
    with running_daemon(*args) as daemon:

        async def burst() -> list[object]:
            async with AsyncClient(daemon.target, timeout=120, retry=None) as client:
                return await asyncio.gather(*(_one(client, i) for i in range(4 * MAX_WAITING)))

        outcomes = asyncio.run(burst())
    rejected = [o for o in outcomes if isinstance(o, ResourceExhaustedError)]
    completed = [o for o in outcomes if not isinstance(o, ResourceExhaustedError)]
    assert rejected, "a burst of 4x --max-waiting must overflow the queue"
    assert len(completed) >= MAX_RUNNING + MAX_WAITING
    assert len(rejected) + len(completed) == 4 * MAX_WAITING
    for error in rejected:
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.retry_after is not None
        assert error.retry_after > 0
    for result in completed:
        assert len(result.token_ids) == NEW_TOKENS  # type: ignore[attr-defined]
