"""A load generator for any OpenAI-compatible server (this daemon's HTTP front door, vLLM's own server).

It speaks the protocol through the official `openai` SDK (AsyncOpenAI), streaming, so what it
measures is what an OpenAI client sees. It sends the same requests as the gRPC load generator
(`autoglm_client.loadgen`: token-id prompts, `ignore_eos`, greedy) to /v1/completions, and reports
the same figures in the same `LoadReport`, so a gRPC run and an HTTP run line up column by column.

Token counts come from the final usage chunk (`stream_options.include_usage`), because an SSE chunk
carries text, not token ids (the prompt tokens served from a prefix cache too, from OpenAI's
`usage.prompt_tokens_details.cached_tokens`, which vLLM's server sends with
--enable-prompt-tokens-details): a chunk's gap is shared equally among the request's mean tokens per
chunk for the inter-token latency. The first token is the first chunk that carries text (or
finishes the choice); an opening chunk with only the assistant role is not a token.
No vLLM import: this runs in the main environment.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoglm_client.loadgen import LoadReport, LoadRequest, Percentiles

_REQUEST_TIMEOUT_S = 600.0


@dataclass
class StreamResult:
    """One streamed completion as the client saw it. Latencies in milliseconds."""

    ttft_ms: float
    e2e_ms: float
    chunk_gaps_ms: list[float]
    content_chunks: int
    completion_tokens: int
    prompt_tokens: int
    text: str
    # None when the server's usage has no prompt_tokens_details (a server that does not report it):
    # "unknown", which a report must not show as "nothing cached".
    cached_prompt_tokens: int | None = None

    def itl_ms(self) -> list[float]:
        """Per-token latencies: each chunk gap spread over the mean tokens per chunk."""
        if not self.chunk_gaps_ms or self.content_chunks == 0:
            return []
        per_chunk = max(1.0, self.completion_tokens / self.content_chunks)
        repeat = max(1, round(per_chunk))
        return [gap / per_chunk for gap in self.chunk_gaps_ms for _ in range(repeat)]


def make_client(base_url: str, *, api_key: str = "unused", timeout: float = _REQUEST_TIMEOUT_S) -> Any:
    """An AsyncOpenAI client with retries off (a load test counts errors instead of hiding them)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)


async def stream_completion(client: Any, *, model: str, prompt_ids: Sequence[int], max_tokens: int) -> StreamResult:
    """POST /v1/completions with a token-id prompt, greedy, exactly `max_tokens` new tokens."""
    start = time.perf_counter()
    stream = await client.completions.create(
        model=model,
        prompt=list(prompt_ids),
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    return await _consume(stream, start, _completion_delta)


async def stream_chat(
    client: Any,
    *,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    sampling: dict[str, Any],
    extra_body: dict[str, Any] | None = None,
) -> StreamResult:
    """POST /v1/chat/completions, streaming, with the usage chunk at the end."""
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra_body or {},
        **sampling,
    )
    return await _consume(stream, start, _chat_delta)


def _completion_delta(choice: Any) -> str | None:
    return str(choice.text) if choice.text else None


def _chat_delta(choice: Any) -> str | None:
    delta = choice.delta
    return str(delta.content) if delta is not None and delta.content else None


async def _consume(stream: AsyncIterator[Any], start: float, delta_of: Any) -> StreamResult:
    first: float | None = None
    last: float | None = None
    gaps: list[float] = []
    parts: list[str] = []
    chunks = 0
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text = delta_of(choice)
            if text is None and choice.finish_reason is None:
                continue  # a role-only opening chunk, or a keep-alive: no token in it
            now = time.perf_counter()
            if text:
                parts.append(text)
            chunks += 1
            if first is None:
                first = now
            elif last is not None:
                gaps.append((now - last) * 1000.0)
            last = now
    end = time.perf_counter()
    completion = int(usage.completion_tokens) if usage is not None else chunks
    prompt = int(usage.prompt_tokens) if usage is not None else 0
    return StreamResult(
        cached_prompt_tokens=cached_tokens(usage),
        ttft_ms=((first if first is not None else end) - start) * 1000.0,
        e2e_ms=(end - start) * 1000.0,
        chunk_gaps_ms=gaps,
        content_chunks=chunks,
        completion_tokens=completion,
        prompt_tokens=prompt,
        text="".join(parts),
    )


def cached_tokens(usage: Any) -> int | None:
    """usage.prompt_tokens_details.cached_tokens of an SDK usage object; None where it is missing."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return int(cached) if cached is not None else None


def error_name(exc: BaseException) -> str:
    """A short name for a failed call: `HTTP 429`, `timeout`, `connection`, `stream error` (an error
    event after the stream began), or the exception's type."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIError):
        return "stream error"
    return type(exc).__name__


@dataclass
class _Tally:
    completed: int = 0
    generated_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)

    def add(self, result: StreamResult) -> None:
        self.completed += 1
        self.generated_tokens += result.completion_tokens
        self.ttft_ms.append(result.ttft_ms)
        self.itl_ms.extend(result.itl_ms())
        self.e2e_ms.append(result.e2e_ms)


async def run_openai_load(
    base_url: str,
    requests: Sequence[LoadRequest],
    *,
    concurrency: int,
    model: str,
    api_key: str = "unused",
) -> LoadReport:
    """Closed loop: `concurrency` workers each send their next request when the previous one ends."""
    import openai

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    tally = _Tally()
    client = make_client(base_url, api_key=api_key)
    try:
        # Open the connection before the clock starts (the gRPC generator does the same with a
        # health call), so that the first TTFT does not carry the TCP handshake.
        await client.models.list()
        pending = iter(requests)

        async def worker() -> None:
            for request in pending:  # shared iterator: each request goes to exactly one worker
                try:
                    result = await stream_completion(
                        client, model=model, prompt_ids=request.prompt_token_ids, max_tokens=request.max_new_tokens
                    )
                except openai.OpenAIError as exc:
                    tally.errors[error_name(exc)] += 1
                    continue
                tally.add(result)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
        duration = time.perf_counter() - start
    finally:
        await client.close()
    return LoadReport(
        completed=tally.completed,
        errors=dict(sorted(tally.errors.items())),
        duration_s=duration,
        generated_tokens=tally.generated_tokens,
        tokens_per_s=tally.generated_tokens / duration if duration > 0 else 0.0,
        ttft_ms=Percentiles.of(tally.ttft_ms),
        itl_ms=Percentiles.of(tally.itl_ms),
        e2e_ms=Percentiles.of(tally.e2e_ms),
        requests=len(requests),
        concurrency=concurrency,
    )


def served_model(models_page: Any) -> str:
    """The first model id of a /v1/models answer (what both servers expect in `model`)."""
    data = list(models_page.data)
    if not data:
        raise RuntimeError("the server lists no model at /v1/models")
    return str(data[0].id)


__all__ = [
    "StreamResult",
    "cached_tokens",
    "error_name",
    "make_client",
    "run_openai_load",
    "served_model",
    "stream_chat",
    "stream_completion",
]
