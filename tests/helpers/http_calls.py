"""Drive one OpenAI-compatible HTTP call (httpx2) and record how it ended in a Ledger.

The HTTP twin of calls.py: raw requests rather than the openai SDK, so that a scenario controls
when a stream's connection is closed, and sees each status, header and SSE event as sent. Every
request asks for logprobs, whose entries name each generated token (`token_id:N`): the ledger's
checks (full output, usage equal to the tokens streamed, LENGTH with exactly max_tokens) then apply
to HTTP calls unchanged, token ids included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx2

from autoglm_client.v1 import generation_pb2 as pb
from tests.helpers.ledger import Ledger, Outcome

MODEL = "builtin:tiny"
CHAT = "/chat/completions"
COMPLETIONS = "/completions"
GUARD_SLACK_S = 10.0

# Each failure's gRPC code, as the daemon's autoglm_requests_total counts it (frontends/openai/errors.py).
STATUS_CODES = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# An error event inside a stream names its kind by `type`.
ERROR_TYPES = {
    "invalid_request_error": grpc.StatusCode.INVALID_ARGUMENT,
    "rate_limit_error": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "service_unavailable": grpc.StatusCode.UNAVAILABLE,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "server_error": grpc.StatusCode.INTERNAL,
}
FINISH_REASONS = {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP_SEQUENCE}


@dataclass(frozen=True)
class HttpPlan:
    """How to make and read one HTTP call."""

    label: str
    path: str
    body: Mapping[str, Any]
    timeout_s: float = 60.0
    cancel_after_s: float | None = None  # close the connection this long after sending
    cancel_after_chunks: int | None = None  # close it once this many token-carrying chunks arrived
    headers: Mapping[str, str] = field(default_factory=dict)


def body(prompt: str, max_tokens: int, *, chat: bool, stream: bool, **extra: Any) -> dict[str, Any]:
    """A request that generates exactly max_tokens (ignore_eos) with a logprob per token."""
    common: dict[str, Any] = {"model": MODEL, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    if stream:
        common["stream_options"] = {"include_usage": True}
    if chat:
        return {"messages": [{"role": "user", "content": prompt}], "logprobs": True, **common, **extra}
    return {"prompt": prompt, "logprobs": 0, **common, **extra}


def plan(label: str, prompt: str, max_tokens: int, *, chat: bool = True, stream: bool = True, **kw: Any) -> HttpPlan:
    return HttpPlan(label, CHAT if chat else COMPLETIONS, body(prompt, max_tokens, chat=chat, stream=stream), **kw)


def health_url(port: int) -> str:
    """GET /health lives beside /v1, not under it."""
    return f"http://127.0.0.1:{port}/health"


def client(base_url: str, *, connections: int = 512) -> httpx2.AsyncClient:
    """One client for a scenario; the pool is sized so that a burst is not queued on the client side."""
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=httpx2.Timeout(120.0))


async def run_call(http: httpx2.AsyncClient, plan: HttpPlan, ledger: Ledger) -> Outcome:
    """Make the call, read it to the end (or close its connection as planned), record the outcome."""
    outcome = ledger.open(
        Outcome(
            label=plan.label,
            sent_at=time.monotonic(),
            deadline_s=plan.timeout_s,
            max_new_tokens=plan.body.get("max_tokens"),
        )
    )
    sent = asyncio.Event()
    reader = asyncio.ensure_future(_exchange(http, plan, outcome, sent))
    try:
        await _supervise(reader, sent, plan, outcome)
    finally:
        outcome.ended_at = time.monotonic()
        ledger.close(outcome)
    return outcome


async def _supervise(reader: asyncio.Future[None], sent: asyncio.Event, plan: HttpPlan, outcome: Outcome) -> None:
    """Wait for the reader; cancel it (closing its connection) at cancel_after_s or at the guard.

    cancel_after_s counts from when the whole request was written: a request given up before its
    bytes left the client never reached the server, and would be a call the server cannot count.
    """
    limit = plan.timeout_s + GUARD_SLACK_S
    if plan.cancel_after_s is not None:
        waiter = asyncio.ensure_future(sent.wait())
        either: set[asyncio.Future[Any]] = {reader, waiter}
        await asyncio.wait(either, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if plan.cancel_after_s is not None and plan.cancel_after_s < limit and not reader.done():
        done, _ = await asyncio.wait({reader}, timeout=plan.cancel_after_s)
        if not done:
            outcome.cancelled_by_client = True
            await _cancel(reader)
            _mark_cancelled(outcome)
            return
        limit -= plan.cancel_after_s
    done, _ = await asyncio.wait({reader}, timeout=limit)
    if not done:
        outcome.hung = True
        await _cancel(reader)
        return
    reader.result()


async def _cancel(reader: asyncio.Future[None]) -> None:
    reader.cancel()
    try:
        await reader
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def _mark_cancelled(outcome: Outcome) -> None:
    outcome.code = grpc.StatusCode.CANCELLED
    outcome.message = "connection closed by the client"


async def _exchange(http: httpx2.AsyncClient, plan: HttpPlan, outcome: Outcome, sent: asyncio.Event) -> None:
    async def trace(event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            sent.set()

    try:
        async with http.stream(
            "POST", plan.path, json=dict(plan.body), headers=dict(plan.headers), extensions={"trace": trace}
        ) as response:
            outcome.http_status = response.status_code
            outcome.retry_after_header = response.headers.get("retry-after")
            if response.status_code != 200:
                await _absorb_error(response, outcome)
            elif plan.body.get("stream"):
                await _read_events(response, plan, outcome)
            else:
                _absorb_body(json.loads(await response.aread()), outcome)
    except httpx2.TransportError as error:
        # No answer at all (refused, reset): the ledger counts it as UNAVAILABLE with no status.
        outcome.code = grpc.StatusCode.UNAVAILABLE
        outcome.message = f"{type(error).__name__}: {error}"


async def _absorb_error(response: httpx2.Response, outcome: Outcome) -> None:
    outcome.code = STATUS_CODES.get(response.status_code, grpc.StatusCode.UNKNOWN)
    raw = await response.aread()
    try:
        outcome.message = str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        outcome.message = f"not an OpenAI error body: {raw[:200]!r}"
    milliseconds = response.headers.get("retry-after-ms")
    if milliseconds is not None:
        outcome.retry_after_s = int(milliseconds) / 1000


async def _read_events(response: httpx2.Response, plan: HttpPlan, outcome: Outcome) -> None:
    chunks = 0
    done = False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            outcome.code = ERROR_TYPES.get(event["error"].get("type"), grpc.StatusCode.UNKNOWN)
            outcome.message = str(event["error"].get("message"))
            return
        outcome.started = True
        if _absorb_chunk(event, outcome):
            chunks += 1
            if plan.cancel_after_chunks is not None and chunks >= plan.cancel_after_chunks:
                outcome.cancelled_by_client = True
                _mark_cancelled(outcome)
                return  # leaving the block closes the connection mid-stream
    if done:
        outcome.code = grpc.StatusCode.OK
    else:
        outcome.code = grpc.StatusCode.UNKNOWN
        outcome.message = "the stream ended without data: [DONE]"


def _absorb_chunk(event: Mapping[str, Any], outcome: Outcome) -> bool:
    """Fold one stream chunk into the outcome; True when it carried tokens."""
    if event.get("usage"):
        outcome.completion_tokens = int(event["usage"]["completion_tokens"])
    carried = False
    for choice in event.get("choices", ()):
        ids = _token_ids(choice.get("logprobs"))
        if ids:
            carried = True
            outcome.chunk_times.append(time.monotonic())
            outcome.token_ids.extend(ids)
        outcome.text += choice.get("delta", {}).get("content") or choice.get("text") or ""
        reason = choice.get("finish_reason")
        if reason is not None:
            outcome.finished = True
            outcome.finish_reason = FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)
    return carried


def _absorb_body(whole: Mapping[str, Any], outcome: Outcome) -> None:
    outcome.code = grpc.StatusCode.OK
    outcome.started = True
    outcome.chunk_times.append(time.monotonic())
    choice = whole["choices"][0]
    outcome.token_ids = _token_ids(choice.get("logprobs"))
    outcome.text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
    outcome.finished = choice.get("finish_reason") is not None
    outcome.finish_reason = FINISH_REASONS.get(choice.get("finish_reason"), pb.FINISH_REASON_UNSPECIFIED)
    outcome.completion_tokens = int(whole["usage"]["completion_tokens"])


def _token_ids(logprobs: Mapping[str, Any] | None) -> list[int]:
    """The generated token ids named by a chat or completion logprobs object."""
    if not logprobs:
        return []
    names = [entry["token"] for entry in logprobs["content"]] if "content" in logprobs else logprobs["tokens"]
    return [int(name.removeprefix("token_id:")) for name in names]
