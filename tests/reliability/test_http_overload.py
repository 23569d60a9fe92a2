"""Scenario 9: overload through the HTTP front door. A burst of 10x the admission capacity, then 3x
sustained, over /v1/chat/completions and /v1/completions, streaming and not.

Every request ends as a full completion or as 429 with Retry-After (and retry-after-ms) and an
OpenAI error body; rejections come at once; the daemon's memory stays bounded; the HTTP series of
autoglm_requests_total and autoglm_rejections_total agree with the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx2
import pytest

from tests.helpers import http_calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger, percentile
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

MAX_RUNNING = 4
MAX_WAITING = 4
CAPACITY = MAX_RUNNING + MAX_WAITING
TOKENS = 12
REJECTED_PAUSE_S = 0.02  # see test_overload.py: keeps the load generator from starving the daemon
REJECT_P99_BOUND_S = 10.0  # only a rejection that queued for a slot would exceed this
RSS_GROWTH_BOUND_MIB = 150.0

EXPECT = {
    "burst": Expectation(codes("OK", "RESOURCE_EXHAUSTED")),
    "sustained": Expectation(codes("OK", "RESOURCE_EXHAUSTED")),
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon(
        *BASE_ARGS, "--max-running", str(MAX_RUNNING), "--max-waiting", str(MAX_WAITING), "--max-queue-time", "60"
    ) as running:
        yield running


def _plan(label: str, n: int) -> http_calls.HttpPlan:
    # All four shapes: chat and completions, streamed and whole.
    return http_calls.plan(label, f"{label} {n}", TOKENS, chat=n % 2 == 0, stream=n % 4 < 2)


async def _sustained(http: httpx2.AsyncClient, ledger: Ledger, seconds: float, worker: int) -> None:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        outcome = await http_calls.run_call(http, _plan("sustained", worker * 10_000 + n), ledger)
        n += 1
        if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            await asyncio.sleep(REJECTED_PAUSE_S)


def _rejection_problems(ledger: Ledger) -> list[str]:
    """Every 429 must carry Retry-After (whole seconds >= 1), retry-after-ms and an OpenAI error body."""
    problems = []
    for outcome in ledger.outcomes:
        if outcome.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            continue
        header = outcome.retry_after_header or ""
        if outcome.http_status != 429 or not header.isdigit() or int(header) < 1:
            problems.append(f"status {outcome.http_status}, Retry-After {header!r}")
        elif outcome.retry_after_s is None or outcome.message.startswith("not an OpenAI error body"):
            problems.append(f"retry-after-ms missing or body malformed: {outcome.message!r}")
    return problems


async def test_http_overload_sheds_excess_with_429_and_loses_nothing(
    daemon: Daemon, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    async with http_calls.client(daemon.http_url) as http:
        await http_calls.run_call(http, _plan("warm", 0), Ledger())  # a first connection, before measuring
        before = await quiet_snapshot(daemon, codes_of=http_codes)
        with Monitor(daemon.process.pid) as monitor:
            await asyncio.gather(*(http_calls.run_call(http, _plan("burst", i), ledger) for i in range(10 * CAPACITY)))
            after_burst_mib = monitor.last.rss_mib
            await asyncio.gather(*(_sustained(http, ledger, sizes.sustained_s, w) for w in range(3 * CAPACITY)))
    ledger.verify(EXPECT)

    burst_codes = ledger.by_code("burst")
    rejected = [o for o in ledger.outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert burst_codes.get("OK", 0) >= CAPACITY, "at least the capacity's worth of the burst is served"
    assert burst_codes.get("RESOURCE_EXHAUSTED", 0) > 0, "a 10x burst must shed load"
    wrong = _rejection_problems(ledger)
    assert not wrong, f"{len(wrong)} rejections without a proper 429: {wrong[:5]}"
    reject_p50 = percentile((o.latency_s for o in rejected), 50)
    reject_p99 = percentile((o.latency_s for o in rejected), 99)
    complete_p50 = percentile((o.latency_s for o in ledger.outcomes if o.code == grpc.StatusCode.OK), 50)
    assert reject_p50 < complete_p50, f"rejections take as long as service: {reject_p50:.3f} s vs {complete_p50:.3f} s"
    assert reject_p99 < REJECT_P99_BOUND_S, f"rejections are not immediate: p99 {reject_p99 * 1000:.0f} ms"
    assert monitor.growth_mib < RSS_GROWTH_BOUND_MIB, f"RSS grew {monitor.growth_mib:.0f} MiB"
    assert daemon.process.poll() is None
    await wait_engine_idle(daemon)
    server_codes = await assert_metrics_match(daemon, before, ledger, codes_of=http_codes)
    after = await asyncio.to_thread(scrape, daemon.admin_url)
    rejections = counts_delta(before, after, "autoglm_rejections_total", "reason", protocol="http")
    assert sum(rejections.values()) == len(rejected), f"rejections metric {rejections}, ledger {len(rejected)}"
    figures.append(
        ledger.figures(
            "9 HTTP overload",
            EXPECT,
            mode=sizes.name,
            capacity=CAPACITY,
            burst=10 * CAPACITY,
            sustained_s=sizes.sustained_s,
            server_codes=server_codes,
            rejections_metric={k: int(v) for k, v in rejections.items()},
            peak_rss_mib=round(monitor.peak_mib, 1),
            rss_after_burst_mib=round(after_burst_mib, 1),
            rss_growth_mib=round(monitor.growth_mib, 1),
        )
    )
