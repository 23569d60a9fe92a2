"""A test harness of the llm-d router's published default scoring: NOT a router we ship.

It re-implements, for a simulation on 127.0.0.1, what the Gateway API Inference Extension's endpoint
picker (the llm-d router) documents as its default profile, from the facts in
../shared/schemas/gie/PROTOCOL-NOTES.md (sections 2 and 4):

- every pod's `vllm:num_requests_waiting`, `vllm:num_requests_running` and `vllm:kv_cache_usage_perc`
  scraped from its /metrics every 50 ms (`--refresh-metrics-interval`);
- queue-scorer: the fewest waiting requests scores 1, the most 0, linear between (all equal: 1);
- kv-cache-utilization-scorer: 1 - the KV fraction;
- prefix-cache-scorer in approximate mode: the prompt cut into blocks of 16 estimated tokens (about
  4 bytes per token), each block's hash chained to the one before, a per-pod LRU of the block hashes
  last sent there; the score is the matched leading blocks over the prompt's blocks;
- the weighted sum with the chart's default weights: queue 2, kv-cache 2, prefix 3; the highest wins.

Two baselines beside it: round-robin, and a hash of the session header (a stand-in for the mesh's
Envoy ring hash on `x-autoglm-session`). The real router is a Go program with more in it (saturation
detection, flow control, filters); this is only enough of its scoring to show that the choice of
policy matters, measured against real daemons.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx2

from tests.helpers.router_gauges import RouterGauges, parse_router_gauges

SCRAPE_INTERVAL_S = 0.050  # the router's default --refresh-metrics-interval
BYTES_PER_TOKEN = 4  # the token-producer's `estimate` backend
BLOCK_TOKENS = 16  # blockSizeTokens without autoTune (the built-in engine has no cache_config_info)
LRU_BLOCKS_PER_POD = 31_250  # lruCapacityPerServer
WEIGHTS = {"queue": 2.0, "kv": 2.0, "prefix": 3.0}  # the chart's default profile


@dataclass(frozen=True)
class Step:
    """One agent step: which session it belongs to, its prompt, how long its answer is."""

    session: str
    prompt: str
    max_tokens: int


# ------------------------------------------------------------------------------------------ scoring
def block_hashes(prompt: str) -> list[bytes]:
    """The prompt's whole blocks, each hash chained to the previous one (a prefix is a hash chain)."""
    data = prompt.encode("utf-8")
    size = BLOCK_TOKENS * BYTES_PER_TOKEN
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(data) - size + 1, size):
        previous = hashlib.blake2b(previous + data[start : start + size], digest_size=8).digest()
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Per pod, an LRU of the block hashes last routed there (the approximate prefix index)."""

    def __init__(self, pods: int, capacity: int = LRU_BLOCKS_PER_POD) -> None:
        self._lru: list[OrderedDict[bytes, None]] = [OrderedDict() for _ in range(pods)]
        self._capacity = capacity

    def score(self, pod: int, blocks: Sequence[bytes]) -> float:
        """Leading blocks found on POD over all blocks (0 for a prompt shorter than a block)."""
        if not blocks:
            return 0.0
        matched = 0
        for block in blocks:
            if block not in self._lru[pod]:
                break
            matched += 1
        return matched / len(blocks)

    def record(self, pod: int, blocks: Sequence[bytes]) -> None:
        lru = self._lru[pod]
        for block in blocks:
            lru[block] = None
            lru.move_to_end(block)
        while len(lru) > self._capacity:
            lru.popitem(last=False)


def queue_scores(waiting: Sequence[float]) -> list[float]:
    """queue-scorer: min-max normalised, fewer waiting is better; all equal scores 1."""
    low, high = min(waiting), max(waiting)
    if high == low:
        return [1.0] * len(waiting)
    return [(high - w) / (high - low) for w in waiting]


def kv_scores(kv: Sequence[float]) -> list[float]:
    """kv-cache-utilization-scorer: the free share of the KV cache."""
    return [1.0 - min(max(k, 0.0), 1.0) for k in kv]


def combined_scores(gauges: Sequence[RouterGauges], prefix: Sequence[float]) -> list[float]:
    queue = queue_scores([g.waiting for g in gauges])
    kv = kv_scores([g.kv_usage for g in gauges])
    weighted = zip(queue, kv, prefix, strict=True)
    return [WEIGHTS["queue"] * q + WEIGHTS["kv"] * k + WEIGHTS["prefix"] * p for q, k, p in weighted]


# ------------------------------------------------------------------------------------------ policies
class Policy:
    name = "policy"

    def pick(self, step: Step, gauges: Sequence[RouterGauges]) -> int:
        raise NotImplementedError


class RoundRobin(Policy):
    name = "round-robin"

    def __init__(self, pods: int) -> None:
        self._next = itertools.cycle(range(pods))

    def pick(self, step: Step, gauges: Sequence[RouterGauges]) -> int:
        return next(self._next)


class SessionHash(Policy):
    name = "session hash"

    def __init__(self, pods: int) -> None:
        self._pods = pods

    def pick(self, step: Step, gauges: Sequence[RouterGauges]) -> int:
        return int.from_bytes(hashlib.sha256(step.session.encode()).digest()[:8], "big") % self._pods


class LoadPrefixScorer(Policy):
    """The router's default profile: queue 2 + KV 2 + approximate prefix 3, ties broken at random."""

    name = "router scoring (queue+KV+prefix)"

    def __init__(self, pods: int, seed: int = 0) -> None:
        self._index = PrefixIndex(pods)
        self._random = random.Random(seed)

    def pick(self, step: Step, gauges: Sequence[RouterGauges]) -> int:
        blocks = block_hashes(step.prompt)
        prefix = [self._index.score(pod, blocks) for pod in range(len(gauges))]
        scores = combined_scores(gauges, prefix)
        best = max(scores)
        pod = self._random.choice([i for i, s in enumerate(scores) if s == best])
        self._index.record(pod, blocks)
        return pod


# ------------------------------------------------------------------------------------------ running
@dataclass
class RunResult:
    policy: str
    ttft_s: list[float] = field(default_factory=list)
    # One value per scrape round: the most waiting on any pod minus the fewest.
    queue_spread: list[float] = field(default_factory=list)
    per_pod: list[int] = field(default_factory=list)
    same_pod_as_previous_step: int = 0
    steps_after_the_first: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def affinity(self) -> float:
        """Share of a session's later steps sent where its previous step went (where its prefix is)."""
        return self.same_pod_as_previous_step / self.steps_after_the_first if self.steps_after_the_first else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Gauges:
    """The latest gauges of every pod, refreshed every 50 ms as the router does."""

    def __init__(self, roots: Sequence[str], client: httpx2.AsyncClient) -> None:
        self.roots = list(roots)
        self._client = client
        self.latest = [RouterGauges(0, 0, 0, None, "", 0) for _ in roots]
        self.spreads: list[float] = []

    async def refresh(self) -> None:
        bodies = await asyncio.gather(*(self._client.get(f"{root}/metrics") for root in self.roots))
        self.latest = [parse_router_gauges(body.text) for body in bodies]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            waiting = [g.waiting for g in self.latest]
            self.spreads.append(max(waiting) - min(waiting))
            await asyncio.sleep(SCRAPE_INTERVAL_S)


async def _one_step(client: httpx2.AsyncClient, root: str, model: str, step: Step) -> float:
    """Stream one completion; seconds from sending to the first token."""
    body = {"model": model, "prompt": step.prompt, "max_tokens": step.max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0}  # fmt: skip
    started = time.perf_counter()
    first: float | None = None
    headers = {"x-autoglm-session": step.session}
    async with client.stream("POST", f"{root}/v1/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            # Completions send no empty opening chunk: the first event carries the first token.
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without a token")
    return first


async def run_policy(policy: Policy, roots: Sequence[str], model: str, sessions: Sequence[Sequence[Step]]) -> RunResult:
    """Play every session's steps in order (sessions concurrently), each step routed by `policy`."""
    result = RunResult(policy.name, per_pod=[0] * len(roots))
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx2.AsyncClient(timeout=300, limits=limits) as client:
        gauges = Gauges(roots, client)
        await gauges.refresh()
        stop = asyncio.Event()
        scraper = asyncio.create_task(gauges.run(stop))

        async def agent(steps: Sequence[Step]) -> None:
            previous: int | None = None
            for step in steps:
                pod = policy.pick(step, gauges.latest)
                result.per_pod[pod] += 1
                if previous is not None:
                    result.steps_after_the_first += 1
                    result.same_pod_as_previous_step += int(pod == previous)
                previous = pod
                try:
                    result.ttft_s.append(await _one_step(client, roots[pod], model, step))
                except (httpx2.HTTPError, RuntimeError) as error:
                    result.failures.append(f"{step.session} on pod {pod}: {error}")

        try:
            await asyncio.gather(*(agent(steps) for steps in sessions))
        finally:
            stop.set()
            await scraper
    result.queue_spread = gauges.spreads
    return result


# ------------------------------------------------------------------------------------------ workload
SYSTEM = "You operate a phone for the user. Answer with one action: do(action=...) or finish(message=...). "


def agent_workload(sessions: int, seed: int, *, hot_steps: int, cold_steps: int, hot: int) -> list[list[Step]]:
    """Skewed agent sessions: `hot` busy agents with long answers and many steps, the rest short.

    Each step's prompt is the system prompt, the session's own history so far, and the new screen's
    text, so consecutive steps of one session share a growing prefix (as Open-AutoGLM's do).
    """
    rng = random.Random(seed)
    out: list[list[Step]] = []
    for s in range(sessions):
        is_hot = s < hot
        session = f"agent-{seed}-{s}"
        history = f"Task {s}: {rng.choice(['open settings', 'send a message', 'book a taxi', 'find a photo'])}. "
        steps: list[Step] = []
        for i in range(hot_steps if is_hot else cold_steps):
            screen = f"Screen {i}: " + " ".join(rng.choice(["Wi-Fi", "Back", "OK", "Search", "Menu"]) for _ in range(8))
            steps.append(Step(session, SYSTEM + history + screen, 48 if is_hot else 8))
            history += f"{screen} -> do(action=Tap, element=[{rng.randrange(999)},{rng.randrange(999)}]). "
        out.append(steps)
    return out
