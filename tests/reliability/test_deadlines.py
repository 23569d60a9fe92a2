"""Scenario 3: deadlines. A request whose deadline passes in the queue never runs; one that expires
mid-stream ends with DEADLINE_EXCEEDED and its batch row is freed (generation does not go on for a
caller that has left).

The engine runs one request at a time here (--max-running 1), so its step counter proves what ran:
the steps taken while a blocker ran alone equal the steps taken while short-deadline requests
waited behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tests.helpers import calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.helpers.scrape import scrape
from tests.reliability.checks import BASE_ARGS, assert_metrics_match, codes, quiet_snapshot, wait_engine_idle
from tests.reliability.sizes import Sizes

# The blocker must outlast the longest short deadline (0.3 s) after it starts decoding, also on a
# fast idle machine (300 tokens took ~0.47 s there: too thin a margin); a loaded machine only widens it.
BLOCKER_TOKENS = 800
LONG_TOKENS = 4000  # far more than fits in the deadline
EXPECT = {
    "blocker": Expectation(codes("OK")),
    "short": Expectation(codes("DEADLINE_EXCEEDED")),
    "expiring": Expectation(codes("DEADLINE_EXCEEDED")),
    "after": Expectation(codes("OK")),
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon(*BASE_ARGS, "--max-running", "1", "--max-waiting", "64") as running:
        yield running


def _steps(daemon: Daemon) -> float:
    return scrape(daemon.admin_url).value("autoglm_engine_steps_total")


async def _decoding(ledger: Ledger, index: int) -> None:
    """Wait until the ledger's call number `index` has received a token."""
    while not (len(ledger.opened) > index and ledger.opened[index].chunk_times):  # noqa: ASYNC110 - filled by another task
        await asyncio.sleep(0.005)


async def test_deadline_passing_in_the_queue_never_runs(
    daemon: Daemon, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    blocker = calls.CallPlan("blocker", calls.request("blocker", BLOCKER_TOKENS), timeout_s=60)
    async with calls.insecure_channel(daemon.target) as channel:
        service = calls.stub(channel)
        await wait_engine_idle(daemon)
        before = await quiet_snapshot(daemon)
        start = _steps(daemon)
        await calls.run_call(service, blocker, ledger)
        alone = _steps(daemon) - start
        for _ in range(sizes.rounds):
            start = _steps(daemon)
            first = len(ledger.opened)
            running = asyncio.create_task(calls.run_call(service, blocker, ledger))
            await _decoding(ledger, first)  # the blocker holds the only batch row
            shorts = [
                calls.CallPlan("short", calls.request(f"short {i}", 8), timeout_s=timeout)
                for i, timeout in enumerate((0.001, 0.01, 0.1, 0.2, 0.3))
            ]
            await asyncio.gather(*(calls.run_call(service, plan, ledger) for plan in shorts))
            await running
            await wait_engine_idle(daemon)
            with_shorts = _steps(daemon) - start
            assert with_shorts == alone, f"{with_shorts - alone} extra engine steps: an expired request ran"
    ledger.verify(EXPECT)
    server_codes = await assert_metrics_match(daemon, before, ledger)
    figures.append(ledger.figures("3a deadline in queue", EXPECT, mode=sizes.name, server_codes=server_codes))


async def test_deadline_mid_stream_ends_the_stream_and_frees_the_row(
    daemon: Daemon, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    async with calls.insecure_channel(daemon.target) as channel:
        service = calls.stub(channel)
        await wait_engine_idle(daemon)
        before = await quiet_snapshot(daemon)
        for _ in range(sizes.rounds):
            start = _steps(daemon)
            plan = calls.CallPlan("expiring", calls.request("expiring", LONG_TOKENS), timeout_s=0.8)
            outcome = await calls.run_call(service, plan, ledger)
            assert outcome.started, "the request was admitted"
            assert outcome.token_ids, "the request must have been decoding when it expired"
            # The row is dropped at the next step. Counted in steps, not seconds (a loaded machine
            # steps slowly): generation that went on for the departed caller would take all
            # LONG_TOKENS steps; the engine must go idle well before that.
            await wait_engine_idle(daemon)
            steps = _steps(daemon)
            assert steps - start < LONG_TOKENS // 2, f"{steps - start} steps: generation went on after the deadline"
            await asyncio.sleep(0.3)
            assert _steps(daemon) == steps, "the engine kept stepping after the only request expired"
            after = calls.CallPlan("after", calls.request("after", 8), timeout_s=30)
            await calls.run_call(service, after, ledger)
    ledger.verify(EXPECT)
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    server_codes = await assert_metrics_match(daemon, before, ledger)
    figures.append(ledger.figures("3b deadline mid-stream", EXPECT, mode=sizes.name, server_codes=server_codes))
