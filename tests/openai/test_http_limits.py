"""Two limits that hold a request's resources for a bounded time only, against a real daemon over HTTP.

- --http-body-timeout: a client that sends its headers and then stalls or trickles its body gets 408
  with an OpenAI error body and its connection closed once the deadline passes, and other clients
  are served meanwhile. Raw sockets, since no HTTP client sends a body this way on purpose.
- --max-decode-pixels / --image-decode-wait: while the decode budget is full, an image that cannot get
  room in time is refused with 429 (RateLimitError in the SDK) and a retry hint; afterwards it loads.

The daemon is the vision stand-in (builtin:tiny reporting vision) whose decodes of images SLOW_WIDTH
wide wait for the test (slow_decode_standin.py), so that the budget is full for as long as needed.
"""

from __future__ import annotations

import json
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers.daemon import Daemon
from tests.helpers.scrape import scrape
from tests.openai.slow_decode_standin import FLAG, SLOW_WIDTH
from tests.openai.support import SERVED, error_body, log_lines, running_module_daemon, sdk, wait_for
from tests.serving import image_samples as samples

BODY_TIMEOUT_S = 3.0
# Time the daemon may take past its deadline to answer, on a shared machine.
ANSWER_SLACK_S = 5.0
SLOW_PIXELS = SLOW_WIDTH * 100  # the slow image fills the whole decode budget
DECODE_WAIT_S = 0.3
CHAT_ROUTE = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gate_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="autoglm-slow-decode-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def daemon(gate_dir: Path) -> Iterator[Daemon]:
    args = ["--auth", "disabled", "--served-model-name", SERVED, "--log-format", "json", FLAG, str(gate_dir)]
    args += ["--http-body-timeout", str(BODY_TIMEOUT_S), "--image-decode-wait", str(DECODE_WAIT_S)]
    args += ["--max-image-pixels", str(SLOW_PIXELS), "--max-decode-pixels", str(SLOW_PIXELS)]
    with running_module_daemon("tests.openai.slow_decode_standin", *args) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with sdk(daemon, "unused") as connected:
        yield connected


# --- the body deadline ---------------------------------------------------------------------------------


def _half_sent(daemon: Daemon, declared: int = 500) -> socket.socket:
    """A connection that sent its headers and the start of a body of `declared` bytes."""
    sock = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=BODY_TIMEOUT_S + ANSWER_SLACK_S)
    head = (
        f"POST {CHAT_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"model": "' + SERVED.encode() + b'", "messages": [')
    return sock


def _trickle(sock: socket.socket, stop: threading.Event, until: float) -> None:
    """One byte every 0.2 s: never idle for long, yet the whole body would take minutes.

    It stops at `until` (monotonic), short of the deadline: a byte that lands as the daemon closes stays
    unread, and the kernel answers a close with unread bytes by a reset, which can destroy the 408
    already on its way (CI saw ConnectionResetError here once).
    """
    while not stop.is_set() and time.monotonic() < until:
        answered, _, _ = select.select([sock], [], [], 0.2)
        if answered:  # stop writing into a connection the daemon closes (a reset could lose its answer)
            return
        try:
            sock.send(b" ")
        except OSError:
            return


def _answer(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection (a timeout here fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _check_408(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 408"), answer[:300]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["type"] == "timeout"
    assert error["param"] == "body"
    assert error["code"] == "request_timeout"
    assert f"within {BODY_TIMEOUT_S:g} s (--http-body-timeout)" in error["message"]
    return error


def test_a_stalled_or_trickling_body_gets_408_and_is_closed_while_others_are_served(
    daemon: Daemon, client: openai.OpenAI
) -> None:
    before = scrape(daemon.admin_url).value(
        "autoglm_requests_total", protocol="http", method=CHAT_ROUTE, code="DEADLINE_EXCEEDED"
    )
    opened = time.monotonic()
    stalled = [_half_sent(daemon) for _ in range(3)]
    trickling = _half_sent(daemon)
    stop = threading.Event()
    # Trickles for 2.4 of the 3 s: far longer than any idle gap (0.2 s), so only a deadline on the
    # whole body can cut it.
    until = opened + BODY_TIMEOUT_S - 0.6
    trickler = threading.Thread(target=_trickle, args=(trickling, stop, until), daemon=True)
    trickler.start()
    try:
        # Meanwhile the daemon serves everyone else, while the four connections still wait for their answer.
        reply = client.chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "hello"}], max_tokens=2
        )
        assert reply.choices[0].finish_reason in {"length", "stop"}
        readable, _, _ = select.select([*stalled, trickling], [], [], 0)
        if time.monotonic() - opened < BODY_TIMEOUT_S:  # else the deadline passed first on a slow machine
            assert readable == [], "a half-sent body was answered before its deadline"
        answers = [_answer(sock) for sock in [*stalled, trickling]]  # each ends with the close
        waited = time.monotonic() - opened
    finally:
        stop.set()
        trickler.join(timeout=5)
        for sock in [*stalled, trickling]:
            sock.close()
    for answer in answers:
        _check_408(answer)
    assert BODY_TIMEOUT_S - 0.1 <= waited < BODY_TIMEOUT_S + ANSWER_SLACK_S

    # Counted as any refused request: the requests metric by code, and one access line each.
    def counted() -> float | None:
        now = scrape(daemon.admin_url).value(
            "autoglm_requests_total", protocol="http", method=CHAT_ROUTE, code="DEADLINE_EXCEEDED"
        )
        return now if now - before == 4 else None

    wait_for(counted, timeout=10, what="four DEADLINE_EXCEEDED HTTP requests counted")
    lines = [
        line
        for line in log_lines(daemon)
        if line.get("logger") == "autoglm_server.access" and line.get("http_status") == 408
    ]
    assert len(lines) >= 4
    assert {line["grpc_code"] for line in lines} == {"DEADLINE_EXCEEDED"}


def test_a_body_sent_whole_in_time_is_served(daemon: Daemon) -> None:
    body = json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=30) as sock:
        head = (
            f"POST {CHAT_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        time.sleep(BODY_TIMEOUT_S / 3)  # a pause, well within the deadline
        sock.sendall(body.encode())
        assert _answer(sock).startswith(b"HTTP/1.1 200")


# --- the decode budget ---------------------------------------------------------------------------------


def _chat_with_image(client: openai.OpenAI, png: bytes) -> Any:
    content = [{"type": "image_url", "image_url": {"url": samples.data_url(png, "image/png")}}]
    return client.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": content}], max_tokens=2)


def test_an_image_that_cannot_get_decode_room_in_time_is_429_with_a_retry_hint(
    daemon: Daemon, client: openai.OpenAI, gate_dir: Path
) -> None:
    small = samples.small("PNG", (10, 10))
    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(_chat_with_image, client, samples.small("PNG", (SLOW_WIDTH, 100)))
        try:
            wait_for(lambda: (gate_dir / "decoding").exists() or None, timeout=60, what="the slow decode")
            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as caught:
                _chat_with_image(client, small)
            waited = time.monotonic() - started
        finally:
            (gate_dir / "release").touch()
        assert holder.result(timeout=60).choices[0].finish_reason in {"length", "stop"}
    assert DECODE_WAIT_S <= waited < DECODE_WAIT_S + ANSWER_SLACK_S
    error = error_body(caught.value)
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "decode_busy"
    assert error["message"].startswith("messages[0].content[0]: ")
    assert f"({SLOW_PIXELS} pixels, --max-decode-pixels)" in error["message"]
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert int(headers["retry-after-ms"]) > 0
    # With the room back, the same image loads.
    assert _chat_with_image(client, small).choices[0].finish_reason in {"length", "stop"}
    rejections = scrape(daemon.admin_url).by_label("autoglm_rejections_total", "reason", protocol="http")
    assert rejections.get("decode_busy") == 1
