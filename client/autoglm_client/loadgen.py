"""A load generator for any autoglm deployment: closed loop at a concurrency, or open-loop Poisson.

Prompts are random token ids (so no tokenizer is needed and lengths are exact) and every request
sets ignore_eos, so each output has exactly its max_new_tokens tokens. Figures are measured at
the client: time to first token (TTFT), inter-token latency (ITL, a chunk's gap shared among its
tokens), end-to-end latency, and generated tokens per second over the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autoglm_client.aio import AsyncClient
from autoglm_client.channel import TlsConfig
from autoglm_client.errors import AutoglmError
from autoglm_client.progress import ProgressLine
from autoglm_client.tokens import StaticToken
from autoglm_client.types import Chunk


@dataclass(frozen=True)
class LoadRequest:
    """One request of a load test: the prompt as token ids, and exactly how many tokens to generate."""

    prompt_token_ids: tuple[int, ...]
    max_new_tokens: int


def _check_range(name: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if low < 1 or high < low:
        raise ValueError(f"{name} must be a range (low, high) with 1 <= low <= high, got {bounds}")


def make_requests(
    count: int,
    *,
    prompt_tokens: tuple[int, int],
    max_new_tokens: tuple[int, int],
    vocab_size: int,
    seed: int,
) -> list[LoadRequest]:
    """`count` requests with lengths drawn uniformly from the inclusive ranges; (64, 64) is fixed.

    The same arguments always give the same requests.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    _check_range("prompt_tokens", prompt_tokens)
    _check_range("max_new_tokens", max_new_tokens)
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        length = rng.randint(*prompt_tokens)
        new_tokens = rng.randint(*max_new_tokens)
        ids = tuple(rng.randrange(vocab_size) for _ in range(length))
        requests.append(LoadRequest(prompt_token_ids=ids, max_new_tokens=new_tokens))
    return requests


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99 (and mean) of samples in milliseconds; NaN (None in to_dict) without samples."""

    p50: float
    p90: float
    p99: float
    mean: float = math.nan
    count: int = 0

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        if not samples:
            return cls(math.nan, math.nan, math.nan)
        ordered = sorted(samples)
        return cls(
            p50=_quantile(ordered, 0.50),
            p90=_quantile(ordered, 0.90),
            p99=_quantile(ordered, 0.99),
            mean=math.fsum(ordered) / len(ordered),
            count=len(ordered),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class LoadReport:
    """The figures of one load run. Latencies in milliseconds; errors counted by gRPC status name."""

    completed: int
    errors: dict[str, int]
    duration_s: float
    generated_tokens: int
    tokens_per_s: float
    ttft_ms: Percentiles
    itl_ms: Percentiles
    e2e_ms: Percentiles
    requests: int = 0
    concurrency: int = 0
    rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "generated_tokens": self.generated_tokens,
            "tokens_per_s": self.tokens_per_s,
            "ttft_ms": self.ttft_ms.to_dict(),
            "itl_ms": self.itl_ms.to_dict(),
            "e2e_ms": self.e2e_ms.to_dict(),
            "requests": self.requests,
            "concurrency": self.concurrency,
            "rate": self.rate,
        }


@dataclass
class _Tally:
    """What the workers have measured so far."""

    completed: int = 0
    generated_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)

    def report(self, duration_s: float, *, requests: int, concurrency: int, rate: float | None) -> LoadReport:
        """The figures of a finished run that took `duration_s` of wall time."""
        return LoadReport(
            completed=self.completed,
            errors=dict(sorted(self.errors.items())),
            duration_s=duration_s,
            generated_tokens=self.generated_tokens,
            tokens_per_s=self.generated_tokens / duration_s if duration_s > 0 else 0.0,
            ttft_ms=Percentiles.of(self.ttft_ms),
            itl_ms=Percentiles.of(self.itl_ms),
            e2e_ms=Percentiles.of(self.e2e_ms),
            requests=requests,
            concurrency=concurrency,
            rate=rate,
        )


async def _measure(client: AsyncClient, request: LoadRequest, tally: _Tally, deadline_s: float | None) -> None:
    start = time.perf_counter()
    last: float | None = None
    tokens = 0
    itl: list[float] = []
    ttft = math.nan
    try:
        stream = client.generate(
            request.prompt_token_ids,
            max_new_tokens=request.max_new_tokens,
            ignore_eos=True,
            timeout=deadline_s,
        )
        async for item in stream:
            if not isinstance(item, Chunk) or not item.token_ids:
                continue
            now = time.perf_counter()
            count = len(item.token_ids)
            if last is None:
                ttft = (now - start) * 1000.0
            else:
                itl.extend([(now - last) * 1000.0 / count] * count)
            last = now
            tokens += count
    except AutoglmError as exc:
        tally.errors[exc.code.name] += 1
        return
    tally.completed += 1
    tally.generated_tokens += tokens
    tally.ttft_ms.append(ttft)
    tally.itl_ms.extend(itl)
    tally.e2e_ms.append((time.perf_counter() - start) * 1000.0)


async def _closed_loop(
    client: AsyncClient,
    requests: Sequence[LoadRequest],
    concurrency: int,
    tally: _Tally,
    deadline_s: float | None,
) -> None:
    pending = iter(requests)

    async def worker() -> None:
        for request in pending:  # a shared iterator: each request goes to exactly one worker
            await _measure(client, request, tally, deadline_s)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))


async def _open_loop(
    client: AsyncClient,
    requests: Sequence[LoadRequest],
    rate: float,
    concurrency: int,
    tally: _Tally,
    deadline_s: float | None,
    seed: int,
) -> None:
    rng = random.Random(seed)
    slots = asyncio.Semaphore(concurrency)  # caps requests in flight; arrivals keep their schedule

    async def send(request: LoadRequest) -> None:
        async with slots:
            await _measure(client, request, tally, deadline_s)

    tasks = []
    next_arrival = time.perf_counter()
    for request in requests:
        delay = next_arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(request)))
        next_arrival += rng.expovariate(rate)
    await asyncio.gather(*tasks)


async def run_load(
    target: str,
    requests: Sequence[LoadRequest],
    *,
    concurrency: int,
    rate: float | None = None,
    token: str | None = None,
    progress: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - each request's gRPC deadline
    tls: TlsConfig | None = None,
    seed: int = 0,
) -> LoadReport:
    """Send `requests` to `target` and measure them.

    Closed loop (rate None): `concurrency` workers each send their next request as soon as the
    previous one ends. Open loop: requests arrive as a Poisson process of `rate` per second
    (seeded by `seed`), with at most `concurrency` in flight. Failed requests are counted in
    `errors` by status code and left out of the latencies. `timeout` is each request's deadline.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    tally = _Tally()
    client = AsyncClient(
        target,
        tls=tls,
        token_provider=StaticToken(token) if token else None,
        retry=None,  # a load test counts UNAVAILABLE instead of hiding it behind retries
        propagate_trace=False,
    )
    bar = ProgressLine(len(requests), lambda: (tally.completed, sum(tally.errors.values()), tally.generated_tokens))
    watcher: asyncio.Task[None] | None = None
    try:
        await _connect(client)
        start = time.perf_counter()
        if progress:
            watcher = asyncio.create_task(bar.run())
        if rate is None:
            await _closed_loop(client, requests, concurrency, tally, timeout)
        else:
            await _open_loop(client, requests, rate, concurrency, tally, timeout, seed)
        duration = time.perf_counter() - start
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            bar.finish()
        await client.close()
    return tally.report(duration, requests=len(requests), concurrency=concurrency, rate=rate)


async def _connect(client: AsyncClient) -> None:
    """Open the connection before the clock starts, so the first TTFT excludes the TCP/TLS handshake."""
    # A deployment without grpc.health still gets measured; its first call pays the handshake.
    with contextlib.suppress(AutoglmError):
        await client.health(timeout=10.0)
