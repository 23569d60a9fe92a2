"""Scenario 11: graceful drain with HTTP streams in flight. SIGTERM while SSE streams (and gRPC
streams beside them) run, then new calls through both doors.

What is correct during the drain: the HTTP listener stays open until the in-flight streams are
done, so that a new request gets an answer it can act on (503 with Retry-After and an OpenAI error
body: the SDK retries, a load balancer moves on) rather than a refused connection, which is what
the gRPC door does too (UNAVAILABLE). /health turns 503 at once. Every in-flight stream of either
door completes in full; the process exits 0, after which the port refuses connections.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx2

from tests.helpers import calls, http_calls
from tests.helpers.daemon import running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.reliability.checks import BASE_ARGS, codes
from tests.reliability.sizes import Sizes

TOKENS = 160
DRAIN_TIMEOUT_S = 60
LATE_HTTP = 8
LATE_GRPC = 4
EXPECT = {
    "in_flight": Expectation(codes("OK")),
    "late": Expectation(codes("UNAVAILABLE")),
    "late_grpc": Expectation(codes("UNAVAILABLE")),
}


async def _all_streaming(ledger: Ledger, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (len(ledger.opened) == count and all(o.chunk_times for o in ledger.opened)):
        assert time.monotonic() < deadline, "the streams never all started"
        await asyncio.sleep(0.01)


async def _health_after_signal(http: httpx2.AsyncClient, url: str, timeout_s: float = 30.0) -> int | None:
    """The first /health status that is not 200 (None: the listener stopped answering first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = (await http.get(url)).status_code
        except httpx2.TransportError:
            return None
        if status != 200:
            return status
        await asyncio.sleep(0.02)
    return 200


def _late_problems(ledger: Ledger, last_stream_end: float) -> list[str]:
    """Late HTTP calls must get 503 + Retry-After + an OpenAI error body, while streams still ran."""
    problems = []
    for outcome in ledger.with_label("late"):
        if outcome.http_status != 503 or not (outcome.retry_after_header or "").isdigit():
            problems.append(f"status {outcome.http_status}, Retry-After {outcome.retry_after_header!r}")
        elif outcome.message.startswith("not an OpenAI error body"):
            problems.append(outcome.message)
        elif outcome.ended_at > last_stream_end:
            problems.append("answered only after the last stream ended: the drain was over")
    return problems


async def _start(ledger: Ledger, http: httpx2.AsyncClient, service: Any, sizes: Sizes) -> list[asyncio.Task[Any]]:
    grpc_streams = sizes.drain_streams // 4
    tasks = []
    for i in range(sizes.drain_streams - grpc_streams):
        plan = http_calls.plan("in_flight", f"drain {i}", TOKENS, chat=i % 2 == 0, timeout_s=90)
        tasks.append(asyncio.create_task(http_calls.run_call(http, plan, ledger)))
    for i in range(grpc_streams):
        grpc_plan = calls.CallPlan("in_flight", calls.request(f"drain grpc {i}", TOKENS), timeout_s=90)
        tasks.append(asyncio.create_task(calls.run_call(service, grpc_plan, ledger)))
    return tasks


async def _late(ledger: Ledger, http: httpx2.AsyncClient, service: Any) -> list[asyncio.Task[Any]]:
    tasks = []
    for i in range(max(LATE_HTTP, LATE_GRPC)):
        if i < LATE_HTTP:
            plan = http_calls.plan("late", f"late {i}", 8, chat=i % 2 == 0, stream=i % 4 < 2, timeout_s=10)
            tasks.append(asyncio.create_task(http_calls.run_call(http, plan, ledger)))
        if i < LATE_GRPC:
            grpc_plan = calls.CallPlan("late_grpc", calls.request(f"late grpc {i}", 8), timeout_s=10)
            tasks.append(asyncio.create_task(calls.run_call(service, grpc_plan, ledger)))
        await asyncio.sleep(0.05)
    return tasks


async def test_sigterm_completes_http_streams_and_answers_503(sizes: Sizes, figures: list[dict[str, Any]]) -> None:
    ledger = Ledger()
    with running_daemon(
        *BASE_ARGS, "--max-running", str(sizes.drain_streams), "--drain-timeout", str(DRAIN_TIMEOUT_S)
    ) as daemon:
        health_url = http_calls.health_url(daemon.http_port)
        async with http_calls.client(daemon.http_url) as http, calls.insecure_channel(daemon.target) as channel:
            service = calls.stub(channel)
            in_flight = await _start(ledger, http, service, sizes)
            await _all_streaming(ledger, sizes.drain_streams)
            signalled = time.monotonic()
            daemon.signal(signal.SIGTERM)
            health = await _health_after_signal(http, health_url)
            late = await _late(ledger, http, service)
            await asyncio.gather(*in_flight, *late)
            streams = ledger.with_label("in_flight")
            last_stream_end = max(o.ended_at for o in streams)
            unfinished_at_signal = sum(1 for o in streams if o.ended_at > signalled)
        exit_code = await asyncio.to_thread(daemon.wait, DRAIN_TIMEOUT_S)
        exited_after_s = time.monotonic() - signalled
        try:
            async with httpx2.AsyncClient() as fresh:
                await fresh.get(health_url, timeout=2)
            after_exit = "answered"
        except httpx2.ConnectError:
            after_exit = "connection refused"
    ledger.verify(EXPECT)
    assert health == 503, f"/health during the drain: {health}"
    assert unfinished_at_signal == sizes.drain_streams, "every stream was still running at SIGTERM"
    wrong = _late_problems(ledger, last_stream_end)
    assert not wrong, f"late HTTP calls during the drain: {wrong}"
    assert exit_code == 0
    assert after_exit == "connection refused"
    figures.append(
        ledger.figures(
            "11 HTTP drain under load",
            EXPECT,
            mode=sizes.name,
            http_streams=sizes.drain_streams - sizes.drain_streams // 4,
            grpc_streams=sizes.drain_streams // 4,
            late_http_statuses=sorted({o.http_status for o in ledger.with_label("late") if o.http_status}),
            health_during_drain=health,
            exit_code=exit_code,
            exit_after_sigterm_s=round(exited_after_s, 2),
            after_exit=after_exit,
        )
    )
