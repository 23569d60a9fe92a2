"""Scenario 2: cancellation storm. Many streams, half cancelled at random points.

A cancel can land while the request waits in the queue, while it is prefilled, or while it
decodes. Afterwards nothing is left in the engine (running = waiting = reserved tokens = 0), the
other half completed with exactly the output they get on an idle daemon, and the daemon is healthy.

Run twice: on builtin:tiny with text Generate calls, and on builtin:glm4v-tiny (the vision model
`make serve` starts) with Chat calls that each carry a small PNG screenshot, so that cancels also land
in the vision tower's prefill and a row's 3-D rotary state is dropped with it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from autoglm_client.v1 import generation_pb2 as pb
from tests.helpers import calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.helpers.procstats import Monitor
from tests.reliability.checks import (
    BASE_ARGS,
    assert_metrics_match,
    codes,
    grpc_stream_codes,
    quiet_snapshot,
    wait_engine_idle,
)
from tests.reliability.sizes import Sizes
from tests.serving import image_samples as samples

# Long enough that a cancel lands before the last token even when chunks carry several tokens.
TOKENS = 96
PROMPTS = 8  # distinct prompts; each survivor is compared with its prompt's idle reference
EXPECT = {
    "complete": Expectation(codes("OK")),
    # A cancel may lose the race with the request's last token: then it completed, which is fine.
    "cancel": Expectation(codes("CANCELLED", "OK")),
}


MODELS = ("builtin:tiny", "builtin:glm4v-tiny")


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def daemon(model: str) -> Iterator[Daemon]:
    # float32 so that a row's greedy output does not depend on its batch neighbours.
    args = (*BASE_ARGS, "--model", model, "--dtype", "float32", "--max-running", "8", "--max-waiting", "256")
    with running_daemon(*args) as running:
        yield running


def _screenshots() -> list[bytes]:
    # Three sizes (128, 144 and 160 visual tokens on GLM-4.1V): rows of different lengths share batches.
    return [samples.encode(samples.screenshot(224, 448 + 56 * k), "PNG") for k in range(3)]


def _request(model: str, p: int, screenshots: list[bytes]) -> pb.GenerateRequest | pb.ChatRequest:
    prompt = f"storm prompt {p}"
    if model == "builtin:glm4v-tiny":
        return calls.chat_with_image(prompt, screenshots[p % len(screenshots)], TOKENS)
    return calls.request(prompt, TOKENS)


def _plan(i: int, rng: random.Random, request: pb.GenerateRequest | pb.ChatRequest) -> calls.CallPlan:
    if i % 2 == 0:
        return calls.CallPlan("complete", request, timeout_s=120)
    where = rng.choice(("early", "anytime", "decode"))
    if where == "early":  # most likely still queued or in its prefill
        return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_s=rng.uniform(0.0, 0.05))
    if where == "anytime":
        return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_s=rng.uniform(0.0, 0.5))
    return calls.CallPlan("cancel", request, timeout_s=120, cancel_after_chunks=rng.randint(1, 4))


async def test_cancellation_storm_frees_every_slot(
    daemon: Daemon, model: str, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    rng = random.Random(20240607)
    reference_ledger = Ledger()
    screenshots = _screenshots()
    async with calls.insecure_channel(daemon.target) as channel:
        service = calls.stub(channel)
        reference = {}
        for p in range(PROMPTS):
            plan = calls.CallPlan("complete", _request(model, p, screenshots), timeout_s=60)
            reference[p] = (await calls.run_call(service, plan, reference_ledger)).token_ids
        before = await quiet_snapshot(daemon, codes_of=grpc_stream_codes)
        ledger = Ledger()
        with Monitor(daemon.process.pid) as monitor:
            plans = [_plan(i, rng, _request(model, i % PROMPTS, screenshots)) for i in range(sizes.storm_streams)]
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
    server_codes = await assert_metrics_match(daemon, before, ledger, codes_of=grpc_stream_codes)
    figures.append(
        ledger.figures(
            "2 cancellation storm" if model == MODELS[0] else f"2 cancellation storm ({model}, screenshots)",
            EXPECT,
            mode=sizes.name,
            cancelled=cancelled,
            cancel_lost_race=ledger.by_code("cancel").get("OK", 0),
            server_codes=server_codes,
            peak_rss_mib=round(monitor.peak_mib, 1),
            rss_growth_mib=round(monitor.growth_mib, 1),
        )
    )
