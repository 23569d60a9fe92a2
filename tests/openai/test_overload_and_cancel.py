"""Overload, abandoned calls and drain over HTTP, on a daemon with one batch row and no queue
(--max-running 1 --max-waiting 0; auth off, it is not what these tests are about). The daemon is the
vision daemon shared with test_hostile_images.py, in both its kinds (the stand-in over builtin:tiny,
and builtin:glm4v-tiny), and each call carries a small screenshot, as an agent step does: the codes
are those the vLLM engine gives (tests/vllm/test_daemon.py), and no row stays taken afterwards.

With one row and no queue the engine's state is easy to read from /metrics: a call that holds the
row shows as autoglm_requests_running 1, and any second call is refused with 429 until the row is free
again. The drain test stops the daemon, so it comes last (and this module after the others using it).
"""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.helpers.daemon import Daemon
from tests.helpers.scrape import Snapshot, scrape
from tests.openai.support import SERVED, async_sdk, error_body, root_url, sdk, wait_for, wait_for_metrics
from tests.serving import image_samples as samples

# 112x224: 32 visual tokens on GLM-4.1V, so a prefill is short and a held row is all decode.
SCREEN = samples.data_url(samples.encode(samples.screenshot(112, 224), "PNG"), "image/png")
MESSAGES: list[Any] = [
    {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": SCREEN}}, {"type": "text", "text": "Open settings"}],
    }
]
LONG = 2000  # tokens: far longer than any test waits, so a call that holds the row holds it until closed
IGNORE_EOS = {"ignore_eos": True}
CHAT_ROUTE = "/v1/chat/completions"


@pytest.fixture(scope="module")
def daemon(vision_daemon: Daemon) -> Daemon:
    return vision_daemon  # --max-running 1 --max-waiting 0, auth off, stand-in or GLM-4.1V (conftest.py)


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with sdk(daemon, "unused") as connected:
        yield connected


def _running(snapshot: Snapshot) -> float:
    return snapshot.value("autoglm_requests_running")


def _http_code(snapshot: Snapshot, code: str) -> float:
    return snapshot.value("autoglm_requests_total", protocol="http", method=CHAT_ROUTE, code=code)


def _wait_idle(daemon: Daemon) -> Snapshot:
    return wait_for_metrics(daemon, lambda s: _running(s) == 0, timeout=30, what="autoglm_requests_running 0")


# --- overload ----------------------------------------------------------------------------------------------------


async def _one_stream(client: openai.AsyncOpenAI, max_tokens: int) -> int:
    """Stream a chat to its end; return its completion_tokens (raises RateLimitError if refused)."""
    stream = await client.chat.completions.create(
        model=SERVED,
        messages=MESSAGES,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=IGNORE_EOS,
    )
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    assert usage is not None
    return usage.completion_tokens


async def test_overload_is_429_with_retry_after_and_the_admitted_stream_completes(daemon: Daemon) -> None:
    _wait_idle(daemon)
    before = scrape(daemon.admin_url)
    async with async_sdk(daemon, "unused") as client:
        holder = await client.chat.completions.create(
            model=SERVED,
            messages=MESSAGES,
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=IGNORE_EOS,
        )
        chunks = aiter(holder)
        await anext(chunks)  # the first token (with the role): the holder is admitted and owns the only row
        # A burst while the row is taken: nothing may wait, so each is refused at once.
        burst = await asyncio.gather(*(_one_stream(client, 8) for _ in range(4)), return_exceptions=True)
        usage = None
        async for chunk in chunks:
            usage = chunk.usage or usage
    assert usage is not None
    assert usage.completion_tokens == 200
    refused = [outcome for outcome in burst if isinstance(outcome, openai.RateLimitError)]
    completed = [outcome for outcome in burst if not isinstance(outcome, BaseException)]
    assert len(refused) + len(completed) == len(burst), burst  # nothing failed any other way
    assert refused, "no request of the burst was refused while the only row was taken"
    assert all(tokens == 8 for tokens in completed)  # any that found the row free ran to its end
    for error in refused:
        assert error.status_code == 429
        headers = error.response.headers
        assert int(headers["retry-after"]) >= 1
        assert int(headers["retry-after-ms"]) >= 0
        assert error_body(error)["type"] == "rate_limit_error"
        assert error_body(error)["code"] == "queue_full"
        assert "--max-waiting" in error_body(error)["message"]
    after = _wait_idle(daemon)
    assert _http_code(after, "RESOURCE_EXHAUSTED") - _http_code(before, "RESOURCE_EXHAUSTED") == len(refused)


# --- a caller that goes away frees its row ------------------------------------------------------------------------


def _holds_the_row(daemon: Daemon) -> Snapshot:
    return wait_for_metrics(daemon, lambda s: _running(s) == 1, timeout=30, what="autoglm_requests_running 1")


def _freed_and_cancelled(daemon: Daemon, before: Snapshot) -> Snapshot:
    def freed(snapshot: Snapshot) -> bool:
        return _running(snapshot) == 0 and _http_code(snapshot, "CANCELLED") > _http_code(before, "CANCELLED")

    return wait_for_metrics(daemon, freed, timeout=30, what="running 0 and one more CANCELLED http call")


def _engine_rows(snapshot: Snapshot) -> float:
    """Rows the engine has stepped, summed over its forward passes: one per token it generated (and
    one per prefill), whether or not anyone read it. A request not aborted would add LONG."""
    return snapshot.value("autoglm_batch_size_sum")


def test_a_closed_stream_frees_the_engine_row(daemon: Daemon, client: openai.OpenAI) -> None:
    before = _wait_idle(daemon)
    stream = client.chat.completions.create(
        model=SERVED, messages=MESSAGES, max_tokens=LONG, stream=True, extra_body=IGNORE_EOS
    )
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    _holds_the_row(daemon)
    stream.close()
    after = _freed_and_cancelled(daemon, before)
    assert _http_code(after, "CANCELLED") - _http_code(before, "CANCELLED") == 1
    assert _engine_rows(after) - _engine_rows(before) < LONG  # aborted in the engine, not run to its end
    # The only row is free again: a new call is admitted (it would get 429 otherwise).
    reply = client.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=3, extra_body=IGNORE_EOS)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3


async def test_an_async_stream_closed_early_frees_the_row(daemon: Daemon) -> None:
    before = _wait_idle(daemon)
    async with async_sdk(daemon, "unused") as client:
        stream = await client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=LONG, stream=True, extra_body=IGNORE_EOS
        )
        chunks = aiter(stream)
        for _ in range(3):
            await anext(chunks)
        await asyncio.to_thread(_holds_the_row, daemon)
        await stream.close()
        after = await asyncio.to_thread(_freed_and_cancelled, daemon, before)
    assert _engine_rows(after) - _engine_rows(before) < LONG


def test_a_whole_response_abandoned_by_its_client_is_cancelled(daemon: Daemon) -> None:
    before = _wait_idle(daemon)
    # The client gives up (its read timeout) long before LONG tokens are done and closes the connection.
    with sdk(daemon, "unused", timeout=1.5) as impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=LONG, extra_body=IGNORE_EOS)
    after = _freed_and_cancelled(daemon, before)
    assert _engine_rows(after) - _engine_rows(before) < LONG


# --- drain (last: it stops the daemon) ----------------------------------------------------------------------


def _health(daemon: Daemon) -> int:
    try:
        with urllib.request.urlopen(f"{root_url(daemon)}/health", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


def test_draining_health_is_503_and_new_calls_are_refused_while_a_stream_finishes(daemon: Daemon) -> None:
    _wait_idle(daemon)
    assert _health(daemon) == 200
    with sdk(daemon, "unused") as client:
        stream = client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=LONG, stream=True, extra_body=IGNORE_EOS
        )
        chunks = iter(stream)
        next(chunks)
        daemon.signal(signal.SIGTERM)
        wait_for(lambda: True if _health(daemon) == 503 else None, timeout=15, what="/health 503 while draining")
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model=SERVED, prompt="hi", max_tokens=2)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "1"
        assert error_body(caught.value)["type"] == "service_unavailable"
        # The stream admitted before the signal still streams; closing it ends the drain.
        assert next(chunks).choices[0].finish_reason is None
        stream.close()
    assert daemon.wait(60) == 0
