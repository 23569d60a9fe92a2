"""The routing simulation: three daemons (built-in engine, builtin:tiny) on 127.0.0.1 behind a harness
of the llm-d router's published default scoring (tests/routing/harness.py: a test harness, NOT a
router we ship), round-robin and the session hash, under a skewed agent workload.

Only properties that hold whatever the machine's speed are asserted; the timings (p95 TTFT, queue
spread) are printed by bench_routing.py and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.helpers.daemon import running_daemon
from tests.helpers.router_gauges import RouterGauges
from tests.routing import harness
from tests.routing.harness import LoadPrefixScorer, RoundRobin, SessionHash, Step

PODS = 3


def _gauges(waiting: float = 0, kv: float = 0) -> RouterGauges:
    return RouterGauges(waiting=waiting, running=0, kv_usage=kv, cache_config=None, model_name="m", scrape_s=0)


# ---------------------------------------------------------------------------- the scorers, pure
def test_queue_scores_are_min_max_normalised_and_all_equal_is_one() -> None:
    assert harness.queue_scores([0, 5, 10]) == [1.0, 0.5, 0.0]
    assert harness.queue_scores([3, 3]) == [1.0, 1.0]


def test_kv_score_is_the_free_share() -> None:
    assert harness.kv_scores([0.0, 0.25, 1.0]) == [1.0, 0.75, 0.0]


def test_prefix_index_matches_leading_blocks_only() -> None:
    shared = "s" * 64 * 3  # three whole blocks of 16 estimated tokens
    index = harness.PrefixIndex(2)
    index.record(0, harness.block_hashes(shared + "a" * 64))
    assert index.score(0, harness.block_hashes(shared + "b" * 64)) == 0.75
    assert index.score(1, harness.block_hashes(shared + "b" * 64)) == 0.0
    # A changed first block breaks the chain: nothing after it matches.
    assert index.score(0, harness.block_hashes("x" * 64 + shared[64:] + "a" * 64)) == 0.0


def test_scorer_prefers_the_prefix_holder_until_its_queue_outweighs_it() -> None:
    scorer = LoadPrefixScorer(PODS)
    step = Step("s", "p" * 64 * 8, 8)
    first = scorer.pick(step, [_gauges(), _gauges(), _gauges()])
    same = [_gauges() for _ in range(PODS)]
    assert scorer.pick(step, same) == first  # prefix 3 points, nothing else differs
    loaded = [_gauges(waiting=10, kv=0.9) if pod == first else _gauges() for pod in range(PODS)]
    # queue 0 + KV 0.2 + prefix 3 = 3.2 on the holder against 2 + 2 + 0 = 4 elsewhere.
    assert scorer.pick(step, loaded) != first


# ---------------------------------------------------------------------------- against real daemons
@pytest.fixture(scope="module")
def roots() -> Iterator[list[str]]:
    with ExitStack() as stack:
        daemons = [stack.enter_context(running_daemon("--auth", "disabled", "--max-running", "2")) for _ in range(PODS)]
        yield [f"http://127.0.0.1:{d.http_port}" for d in daemons]


def test_each_policy_serves_the_skewed_workload_and_routes_as_published(roots: list[str]) -> None:
    sessions = harness.agent_workload(6, seed=7, hot_steps=6, cold_steps=2, hot=2)
    steps = sum(len(s) for s in sessions)
    results = {
        policy.name: asyncio.run(harness.run_policy(policy, roots, "builtin:tiny", sessions))
        for policy in (LoadPrefixScorer(PODS, seed=7), RoundRobin(PODS), SessionHash(PODS))
    }
    for name, result in results.items():
        assert result.failures == [], name
        assert len(result.ttft_s) == steps, name
        assert sum(result.per_pod) == steps, name
        assert result.queue_spread, name  # the gauges were scraped throughout
    round_robin = results[RoundRobin.name]
    session_hash = results[SessionHash.name]
    scorer = results[LoadPrefixScorer.name]
    assert max(round_robin.per_pod) - min(round_robin.per_pod) <= 1
    assert session_hash.affinity == 1.0
    # The prefix scorer keeps most of a session's steps where its history is; round-robin scatters them.
    assert scorer.affinity > round_robin.affinity
