"""Scenario 5: engine faults, injected through the runner's seam (tests/helpers/faulty_daemon.py).

An out-of-memory error in a step fails only that step's requests, with RESOURCE_EXHAUSTED and a
RetryInfo; the engine carries on and frees everything. The same holds when the KV cache runs out of
memory while merging a joining request into the batch (only the joiner fails) or while dropping a
finished row (the rows left in that batch fail). A fatal error makes the daemon stop serving and
exit non-zero within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from tests.helpers import calls
from tests.helpers.daemon import Daemon
from tests.helpers.faulty_daemon import inject, running_faulty_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.reliability.checks import BASE_ARGS, assert_metrics_match, codes, quiet_snapshot, wait_engine_idle
from tests.reliability.sizes import Sizes

TOKENS = 400
EXIT_ENGINE_FAILED = 70  # app.py: EX_SOFTWARE
FATAL_EXIT_BOUND_S = 20.0
EXPECT = {
    "decode_victim": Expectation(codes("RESOURCE_EXHAUSTED")),
    "prefill_victim": Expectation(codes("RESOURCE_EXHAUSTED")),
    "bystander": Expectation(codes("OK")),
    "after": Expectation(codes("OK")),
    "doomed": Expectation(codes("INTERNAL", "UNAVAILABLE")),
    "merge_victim": Expectation(codes("RESOURCE_EXHAUSTED")),
    "select_victim": Expectation(codes("RESOURCE_EXHAUSTED")),
    "finisher": Expectation(codes("OK")),
}


async def _streaming(ledger: Ledger, first: int, count: int) -> None:
    """Wait until calls first..first+count-1 of the ledger have been made and each received a token."""
    deadline = time.monotonic() + 30
    while not (
        len(ledger.opened) >= first + count and all(o.chunk_times for o in ledger.opened[first : first + count])
    ):
        assert time.monotonic() < deadline, "streams did not start"
        await asyncio.sleep(0.01)


async def test_out_of_memory_fails_only_its_step_and_the_engine_goes_on(
    sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    with running_faulty_daemon(*BASE_ARGS, "--max-running", "4") as (daemon, faults):
        assert isinstance(daemon, Daemon)
        async with calls.insecure_channel(daemon.target) as channel:
            service = calls.stub(channel)
            before = await quiet_snapshot(daemon)
            for _ in range(sizes.rounds):
                # OOM in a decode step: every row of the batch fails; the next requests are served.
                first = len(ledger.opened)
                victims = [
                    asyncio.create_task(
                        calls.run_call(
                            service,
                            calls.CallPlan("decode_victim", calls.request(f"v{i}", TOKENS), timeout_s=60),
                            ledger,
                        )
                    )
                    for i in range(4)
                ]
                await _streaming(ledger, first, len(victims))
                inject(faults, "oom decode 1")
                await asyncio.gather(*victims)
                await wait_engine_idle(daemon)
                # OOM in a prefill: only the joining request fails; the running ones are untouched.
                first = len(ledger.opened)
                bystanders = [
                    asyncio.create_task(
                        calls.run_call(
                            service, calls.CallPlan("bystander", calls.request(f"b{i}", TOKENS), timeout_s=60), ledger
                        )
                    )
                    for i in range(2)
                ]
                await _streaming(ledger, first, len(bystanders))
                inject(faults, "oom prefill 1")
                await calls.run_call(
                    service, calls.CallPlan("prefill_victim", calls.request("joiner", 8), timeout_s=60), ledger
                )
                await asyncio.gather(*bystanders)
                await calls.run_call(service, calls.CallPlan("after", calls.request("after", 16), timeout_s=60), ledger)
            await wait_engine_idle(daemon)
            server_codes = await assert_metrics_match(daemon, before, ledger)
            assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    ledger.verify(EXPECT)
    rejected = [o for o in ledger.outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all(o.retry_after_s is not None for o in rejected), "an OOM failure carries RetryInfo"
    figures.append(ledger.figures("5a engine OOM", EXPECT, mode=sizes.name, server_codes=server_codes))


def _calls(service: Any, ledger: Ledger, label: str, names: list[str], tokens: int) -> list[asyncio.Task[Any]]:
    return [
        asyncio.create_task(
            calls.run_call(service, calls.CallPlan(label, calls.request(name, tokens), timeout_s=60), ledger)
        )
        for name in names
    ]


async def test_out_of_memory_in_the_kv_merge_or_select_fails_only_that_batch(
    sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    with running_faulty_daemon(*BASE_ARGS, "--max-running", "4") as (daemon, faults):
        assert isinstance(daemon, Daemon)
        async with calls.insecure_channel(daemon.target) as channel:
            service = calls.stub(channel)
            before = await quiet_snapshot(daemon)
            for round_ in range(sizes.rounds):
                # OOM while a joining request is merged into the running batch: the joiner alone fails.
                first = len(ledger.opened)
                bystanders = _calls(service, ledger, "bystander", [f"mb{round_}-{i}" for i in range(2)], TOKENS)
                await _streaming(ledger, first, len(bystanders))
                inject(faults, "oom merge 1")
                await calls.run_call(
                    service, calls.CallPlan("merge_victim", calls.request("joiner", 8), timeout_s=60), ledger
                )
                await asyncio.gather(*bystanders)
                await wait_engine_idle(daemon)
                # OOM while a finished row is dropped from the batch: the rows left in it fail.
                first = len(ledger.opened)
                victims = _calls(service, ledger, "select_victim", [f"sv{round_}-{i}" for i in range(3)], TOKENS)
                await _streaming(ledger, first, len(victims))
                inject(faults, "oom select 1")
                await calls.run_call(
                    service, calls.CallPlan("finisher", calls.request("finisher", 8), timeout_s=60), ledger
                )
                await asyncio.gather(*victims)
                await calls.run_call(service, calls.CallPlan("after", calls.request("after", 16), timeout_s=60), ledger)
            await wait_engine_idle(daemon)
            server_codes = await assert_metrics_match(daemon, before, ledger)
            assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    ledger.verify(EXPECT)
    rejected = [o for o in ledger.outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert rejected, "no request failed: the faults did not fire"
    assert all(o.retry_after_s is not None for o in rejected), "an OOM failure carries RetryInfo"
    figures.append(ledger.figures("5c KV merge/select OOM", EXPECT, mode=sizes.name, server_codes=server_codes))


async def test_fatal_engine_error_stops_serving_and_exits_non_zero(figures: list[dict[str, Any]]) -> None:
    ledger = Ledger()
    with running_faulty_daemon(*BASE_ARGS) as (daemon, faults):
        assert isinstance(daemon, Daemon)
        async with calls.insecure_channel(daemon.target) as channel:
            service = calls.stub(channel)
            inject(faults, "fatal decode")
            started = time.monotonic()
            doomed = [
                calls.run_call(service, calls.CallPlan("doomed", calls.request(f"d{i}", TOKENS), timeout_s=30), ledger)
                for i in range(3)
            ]
            await asyncio.gather(*doomed)
            readiness = None
            with contextlib.suppress(grpc.RpcError):
                readiness = daemon.health(timeout=1.0)
            exit_code = await asyncio.to_thread(daemon.wait, FATAL_EXIT_BOUND_S)
            exited_after_s = time.monotonic() - started
    ledger.verify(EXPECT)
    assert readiness in (None, health_pb2.HealthCheckResponse.NOT_SERVING), f"readiness after the fault: {readiness}"
    assert exit_code == EXIT_ENGINE_FAILED
    figures.append(
        ledger.figures(
            "5b engine fatal error", EXPECT, exit_code=exit_code, exit_after_fault_s=round(exited_after_s, 2)
        )
    )
