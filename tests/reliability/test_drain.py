"""Scenario 4: graceful drain under load. SIGTERM with streams in flight and new calls arriving.

Every in-flight stream completes with its full output; readiness turns NOT_SERVING; calls that
arrive during the drain get UNAVAILABLE; the process exits 0 well within --drain-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from tests.helpers import calls
from tests.helpers.daemon import running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.reliability.checks import BASE_ARGS, codes
from tests.reliability.sizes import Sizes

TOKENS = 160
DRAIN_TIMEOUT_S = 60
LATE_CALLS = 8
EXPECT = {
    "in_flight": Expectation(codes("OK")),
    "late": Expectation(codes("UNAVAILABLE")),
}


async def _all_streaming(ledger: Ledger, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (len(ledger.opened) == count and all(o.chunk_times for o in ledger.opened)):
        assert time.monotonic() < deadline, "the streams never all started"
        await asyncio.sleep(0.01)


async def _readiness(target: str) -> int | None:
    """Readiness, or None when the server no longer answers."""
    from grpc_health.v1 import health_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        with contextlib.suppress(grpc.RpcError):
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="autoglm.v1.GenerationService"), timeout=2
            )
            return int(reply.status)
    return None


async def _readiness_after_signal(target: str, timeout_s: float = 30.0) -> int | None:
    """The first readiness that is not SERVING (None: the server stopped answering first)."""
    deadline = time.monotonic() + timeout_s
    while (status := await _readiness(target)) == health_pb2.HealthCheckResponse.SERVING:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return status


async def test_sigterm_completes_in_flight_and_refuses_new_calls(sizes: Sizes, figures: list[dict[str, Any]]) -> None:
    ledger = Ledger()
    with running_daemon(
        *BASE_ARGS, "--max-running", str(sizes.drain_streams), "--drain-timeout", str(DRAIN_TIMEOUT_S)
    ) as daemon:
        async with calls.insecure_channel(daemon.target) as channel:
            service = calls.stub(channel)
            in_flight = [
                asyncio.create_task(
                    calls.run_call(
                        service, calls.CallPlan("in_flight", calls.request(f"drain {i}", TOKENS), timeout_s=90), ledger
                    )
                )
                for i in range(sizes.drain_streams)
            ]
            await _all_streaming(ledger, sizes.drain_streams)
            signalled = time.monotonic()
            daemon.signal(signal.SIGTERM)
            # The daemon handles the signal on its event loop (later on a loaded machine): poll until
            # readiness leaves SERVING rather than guess how long that takes.
            readiness = await _readiness_after_signal(daemon.target)
            late = []
            for i in range(LATE_CALLS):
                plan = calls.CallPlan("late", calls.request(f"late {i}", 8), timeout_s=10)
                late.append(asyncio.create_task(calls.run_call(service, plan, ledger)))
                await asyncio.sleep(0.05)
            await asyncio.gather(*in_flight, *late)
            unfinished_at_signal = sum(1 for o in ledger.with_label("in_flight") if o.ended_at > signalled)
        exit_code = await asyncio.to_thread(daemon.wait, DRAIN_TIMEOUT_S)
        exited_after_s = time.monotonic() - signalled
    ledger.verify(EXPECT)
    assert readiness == health_pb2.HealthCheckResponse.NOT_SERVING, f"readiness during the drain: {readiness}"
    assert unfinished_at_signal == sizes.drain_streams, "every stream was still running at SIGTERM"
    assert exit_code == 0
    figures.append(
        ledger.figures(
            "4 drain under load",
            EXPECT,
            mode=sizes.name,
            exit_code=exit_code,
            exit_after_sigterm_s=round(exited_after_s, 2),
            readiness_during_drain="NOT_SERVING",
        )
    )
