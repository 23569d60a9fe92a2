"""Scenario 2: cancellation storm. Many streams, half cancelled at random points.

A cancel can land while the request waits in the queue, while it is prefilled, or while it
decodes. Afterwards nothing is left in the engine (running = waiting = reserved tokens = 0), the
other half completed with exactly the output they get on an idle daemon, and the daemon is healthy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tests.helpers import calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.helpers.procstats import Monitor
from tests.reliability.checks import BASE_ARGS, assert_metrics_match, codes, quiet_snapshot, wait_engine_idle
from tests.reliability.sizes import Sizes

# Long enough that a cancel lands before the last token even when chunks carry several tokens.
TOKENS = 96
PROMPTS = 8  # distinct prompts; each survivor is compared with its prompt's idle reference
EXPECT = {
    "complete": Expectation(codes("OK")),
    # A cancel may lose the race with the request's last token: then it completed, which is fine.
    "cancel": Expectation(codes("CANCELLED", "OK")),
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # float32 so that a row's greedy output does not depend on its batch neighbours.
    with running_daemon(*BASE_ARGS, "--dtype", "float32", "--max-running", "8", "--max-waiting", "256") as running:
        yield running


def _plan(i: int, rng: random.Random) -> calls.CallPlan:
    prompt = f"storm prompt {i % PROMPTS}"
    request = calls.request(prompt, TOKENS)
    if i % 2 == 0:
        return calls.CallPlan("complete", request, timeout_s=120)
    where = rng.choice(("early", "anytime", "decode"))
    if where == "early":  # most likely still queued or in its prefill
        return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_s=rng.uniform(0.0, 0.05))
    if where == "anytime":
        return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_s=rng.uniform(0.0, 0.5))
    return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_chunks=rng.randint(1, 4))


async def test_cancellation_storm_frees_every_slot(daemon: Daemon, sizes: Sizes, figures: list[dict[str, Any]]) -> None:
    rng = random.Random(20240607)
    reference_ledger = Ledger()
    async with calls.insecure_channel(daemon.target) as channel:
        service = calls.stub(channel)
        reference = {}
        for p in range(PROMPTS):
            plan = calls.CallPlan("complete", calls.request(f"storm prompt {p}", TOKENS), timeout_s=60)
            reference[p] = (await calls.run_call(service, plan, reference_ledger)).token_ids
        before = await quiet_snapshot(daemon)
        ledger = Ledger()
        with Monitor(daemon.process.pid) as monitor:
            plans = [_plan(i, rng) for i in range(sizes.storm_streams)]
            outcomes = await asyncio.gather(*(calls.run_call(service, plan, ledger) for plan in plans))
    reference_ledger.verify(EXPECT)
    ledger.verify(EXPECT)
    wrong = [
        (i, o.token_ids, reference[i % PROMPTS])
        for i, o in enumerate(outcomes)
        if o.label == "complete" and o.token_ids != reference[i % PROMPTS]
    ]
    assert not wrong, f"{len(wrong)} survivors differ from their idle output, e.g. {wrong[0]}"
    cancelled = ledger.by_code("cancel").get("CANCELLED", 0)
    assert cancelled >= sizes.storm_streams // 4, f"only {cancelled} cancels landed: the storm did not storm"
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    await wait_engine_idle(daemon)
    server_codes = await assert_metrics_match(daemon, before, ledger)
    figures.append(
        ledger.figures(
            "2 cancellation storm",
            EXPECT,
            mode=sizes.name,
            cancelled=cancelled,
            cancel_lost_race=ledger.by_code("cancel").get("OK", 0),
            server_codes=server_codes,
            peak_rss_mib=round(monitor.peak_mib, 1),
            rss_growth_mib=round(monitor.growth_mib, 1),
        )
    )
