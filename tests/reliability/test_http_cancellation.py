"""Scenario 10: cancellation storm over HTTP. Many SSE streams; half have their connection closed by
the client at a random point (while queued or prefilling, at any time, or after a few chunks).

A closed connection must abort the request in the engine, as a gRPC cancel does: afterwards
running = waiting = reserved tokens = 0, the survivors carry exactly the tokens the same prompt
gets on an idle daemon, the daemon still serves both front doors, and the metrics count the
cancels the clients made.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tests.helpers import calls, http_calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.helpers.procstats import Monitor
from tests.helpers.scrape import counts_delta, scrape
from tests.reliability.checks import (
    BASE_ARGS,
    assert_metrics_match,
    codes,
    http_codes,
    quiet_snapshot,
    wait_engine_idle,
)
from tests.reliability.sizes import Sizes

TOKENS = 96  # long enough that a close lands before the last token
PROMPTS = 8
EXPECT = {
    "complete": Expectation(codes("OK")),
    # A close may lose the race with the last token: then the request completed, which is fine.
    "cancel": Expectation(codes("CANCELLED", "OK")),
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # float32 so that a row's greedy output does not depend on its batch neighbours.
    with running_daemon(*BASE_ARGS, "--dtype", "float32", "--max-running", "8", "--max-waiting", "256") as running:
        yield running


def _plan(i: int, rng: random.Random) -> http_calls.HttpPlan:
    prompt = f"storm prompt {i % PROMPTS}"
    chat = i % 4 < 2  # both routes; every storm request streams
    if i % 2 == 0:
        return http_calls.plan("complete", prompt, TOKENS, chat=chat, timeout_s=120)
    where = rng.choice(("early", "anytime", "decode"))
    if where == "early":
        return http_calls.plan("cancel", prompt, TOKENS, chat=chat, timeout_s=120, cancel_after_s=rng.uniform(0, 0.05))
    if where == "anytime":
        return http_calls.plan("cancel", prompt, TOKENS, chat=chat, timeout_s=120, cancel_after_s=rng.uniform(0, 0.5))
    return http_calls.plan("cancel", prompt, TOKENS, chat=chat, timeout_s=120, cancel_after_chunks=rng.randint(1, 4))


async def _references(http: Any) -> dict[tuple[int, bool], list[int]]:
    """Each prompt's tokens on the idle daemon, per route (chat renders a template around it)."""
    ledger = Ledger()
    found = {}
    for p in range(PROMPTS):
        for chat in (True, False):
            plan = http_calls.plan("complete", f"storm prompt {p}", TOKENS, chat=chat, timeout_s=60)
            found[(p, chat)] = (await http_calls.run_call(http, plan, ledger)).token_ids
    ledger.verify(EXPECT)
    return found


async def _still_serves(daemon: Daemon, http: Any) -> None:
    ledger = Ledger()
    await http_calls.run_call(http, http_calls.plan("complete", "after the storm", 8), ledger)
    async with calls.insecure_channel(daemon.target) as channel:
        await calls.run_call(calls.stub(channel), calls.CallPlan("complete", calls.request("after", 8), 30), ledger)
    ledger.verify(EXPECT)
    health = await http.get(http_calls.health_url(daemon.http_port))
    assert health.status_code == 200, health.text
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING


async def test_http_cancellation_storm_frees_every_slot(
    daemon: Daemon, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    rng = random.Random(20261201)
    async with http_calls.client(daemon.http_url) as http:
        reference = await _references(http)
        before = await quiet_snapshot(daemon, codes_of=http_codes)
        ledger = Ledger()
        plans = [_plan(i, rng) for i in range(sizes.storm_streams)]
        with Monitor(daemon.process.pid) as monitor:
            outcomes = await asyncio.gather(*(http_calls.run_call(http, plan, ledger) for plan in plans))
        ledger.verify(EXPECT)
        wrong = [
            (i, o.token_ids, reference[(i % PROMPTS, plan.path == http_calls.CHAT)])
            for i, (o, plan) in enumerate(zip(outcomes, plans, strict=True))
            if o.label == "complete" and o.token_ids != reference[(i % PROMPTS, plan.path == http_calls.CHAT)]
        ]
        assert not wrong, f"{len(wrong)} survivors differ from their idle output, e.g. {wrong[0]}"
        cancelled = ledger.by_code("cancel").get("CANCELLED", 0)
        assert cancelled >= sizes.storm_streams // 4, f"only {cancelled} closes landed: the storm did not storm"
        idle = await wait_engine_idle(daemon)  # polls /metrics until running = waiting = budget = 0
        server_codes = await assert_metrics_match(daemon, before, ledger, codes_of=http_codes)
        after = await asyncio.to_thread(scrape, daemon.admin_url)
        rejections = counts_delta(before, after, "autoglm_rejections_total", "reason", protocol="http")
        # A close that lost the race with the last chunk the server wrote counts OK there: the
        # server can count fewer cancels than the clients made, never more, and no other failure.
        assert server_codes.get("CANCELLED", 0) <= cancelled
        # A cancel is the caller's doing, not a refusal: it is counted under requests_total's code only.
        assert not rejections, f"the storm made the server refuse requests: {rejections}"
        await _still_serves(daemon, http)
    assert idle.value("autoglm_requests_running") == 0
    figures.append(
        ledger.figures(
            "10 HTTP cancellation storm",
            EXPECT,
            mode=sizes.name,
            cancelled=cancelled,
            cancel_lost_race=ledger.by_code("cancel").get("OK", 0),
            server_codes=server_codes,
            server_cancelled=server_codes.get("CANCELLED", 0),
            peak_rss_mib=round(monitor.peak_mib, 1),
            rss_growth_mib=round(monitor.growth_mib, 1),
        )
    )
