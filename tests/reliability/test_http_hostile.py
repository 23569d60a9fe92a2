"""Scenario 12: hostile JSON, transport tricks and hostile images through the HTTP front door, then
hypothesis-generated JSON bodies.

Each case gets its expected status with an OpenAI error body naming the field (never a 500, never
a hang), an http URL named in a request is never contacted, a slowloris-style client that sends
part of a body and vanishes costs nothing lasting, and the daemon's open fds and RSS come back.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.procstats import sample
from tests.reliability import http_hostile_cases as cases
from tests.reliability.checks import BASE_ARGS
from tests.reliability.sizes import Sizes
from tests.serving import image_http

CALL_TIMEOUT_S = 30.0
FD_SLACK = 8  # see test_hostile_input.py
RSS_GROWTH_BOUND_MIB = 96.0
ROUTE_STATUSES = {200, 400, 404, 413}  # what a JSON body may get from the completion routes


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon(*BASE_ARGS, "--max-request-bytes", str(cases.MAX_REQUEST_BYTES)) as running:
        yield running


@pytest.fixture(scope="module")
def http(daemon: Daemon) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=f"http://127.0.0.1:{daemon.http_port}", timeout=CALL_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def listener() -> Iterator[image_http.Listener]:
    server = image_http.start()
    server.routes["/screen.png"] = lambda handler: image_http.send_body(handler, b"\x89PNG")
    yield server
    server.stop()


def _problem(case: cases.Case, response: httpx2.Response) -> str:
    """What is wrong with the answer to one case (empty: nothing)."""
    text = response.text
    if response.status_code != case.status:
        return f"{response.status_code} {text[:200]!r}, expected {case.status}"
    if "Traceback" in text or "<class" in text:
        return f"internals leaked: {text[:200]!r}"
    if case.status == 200:
        return "" if response.json()["choices"][0]["finish_reason"] else "no finish_reason"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"not an OpenAI error body: {text[:200]!r}"
    if case.param is not None and not str(error.get("param") or "").startswith(case.param):
        return f"param {error.get('param')!r} ({error.get('message')!r}), expected {case.param!r}"
    if case.contains is not None and case.contains not in str(error.get("message")):
        return f"message {error.get('message')!r} lacks {case.contains!r}"
    return ""


def _count(statuses: dict[str, int], status: int) -> None:
    """Tally by status, named as the figures table shows it (OK apart from the failures)."""
    key = "OK" if status == 200 else f"HTTP {status}"
    statuses[key] = statuses.get(key, 0) + 1


def _send(http: httpx2.Client, case: cases.Case) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = http.request(case.method, case.path, content=case.content(), headers=case.headers)
    return response, time.monotonic() - started


def _slowloris(port: int, declared: int = 100_000, sent: int = 100) -> None:
    """Send headers and part of the body, linger, then vanish."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = f"POST {cases.CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(f"{head}content-length: {declared}\r\n\r\n".encode() + b"{" * sent)
        time.sleep(0.5)


def test_hostile_http_requests_get_precise_statuses(
    daemon: Daemon, http: httpx2.Client, listener: image_http.Listener, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    table = cases.json_cases() + cases.transport_cases() + cases.image_cases(listener.base)
    _send(http, table[0])  # warm the connection before measuring
    before = sample(daemon.process.pid)
    wrong: list[str] = []
    statuses: dict[str, int] = {}
    slowest = 0.0
    for _ in range(sizes.rounds):
        for case in table:
            response, took = _send(http, case)
            slowest = max(slowest, took)
            _count(statuses, response.status_code)
            problem = _problem(case, response)
            if problem:
                wrong.append(f"{case.name}: {problem}")
        for _ in range(4):
            _slowloris(daemon.http_port)
        # While half-sent bodies linger, everyone else is served.
        with socket.create_connection(("127.0.0.1", daemon.http_port)) as lingering:
            lingering.sendall(f"POST {cases.CHAT} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{{".encode())
            response, _ = _send(http, cases.Case("valid beside a slowloris", cases.raw(cases.chat()), 200))
            if response.status_code != 200:
                wrong.append(f"a valid request beside a half-sent body got {response.status_code}")
    time.sleep(0.3)  # let the server notice the closed sockets
    after = sample(daemon.process.pid)
    alive = daemon.process.poll() is None
    health = http.get("/health").status_code if alive else 0
    sent = sum(statuses.values())
    figures.append(
        {
            "scenario": "12 HTTP hostile input (hand-written)",
            "mode": sizes.name,
            "sent": sent,
            "by_code": dict(sorted(statuses.items())),
            "completed": statuses.get("OK", 0),
            "wrong_status": len(wrong),
            "lost": len(wrong) if alive else sent,
            "slowloris_connections": 5 * sizes.rounds,
            "slowest_answer_ms": round(slowest * 1000, 1),
            "listener_connections": listener.connections,
            "rss_before_mib": round(before.rss_mib, 1),
            "rss_after_mib": round(after.rss_mib, 1),
            "peak_rss_mib": round(after.peak_rss_mib, 1),
            "fds_before": before.open_fds,
            "fds_after": after.open_fds,
        }
    )
    assert alive, "the daemon died"
    assert health == 200
    assert not wrong, f"{len(wrong)} cases got the wrong answer:\n" + "\n".join(wrong)
    assert listener.connections == 0, f"the daemon contacted a URL a caller named: {listener.paths}"
    assert after.open_fds <= before.open_fds + FD_SLACK, f"fds {before.open_fds} -> {after.open_fds}"
    assert (after.rss_bytes - before.rss_bytes) / 2**20 < RSS_GROWTH_BOUND_MIB


# ----------------------------------------------------------------------------- hypothesis

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = (
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "n",
    "seed",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "priority",
    "stop_token_ids",
    "max_completion_tokens",
    "echo",
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "robot"]) | _json},
    optional={
        "content": st.text(max_size=30)
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2)
        | _json
    },
)


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A body that is valid often enough to be served, with any field possibly any JSON value."""
    chat = draw(st.booleans())
    body: dict[str, Any] = {"model": draw(st.just(cases.MODEL) | _json), "max_tokens": draw(st.integers(1, 6) | _json)}
    if chat:
        body["messages"] = draw(st.lists(_message, max_size=3) | _json)
    else:
        body["prompt"] = draw(st.text(min_size=1, max_size=30) | st.lists(st.integers(0, 300), max_size=5) | _json)
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=4, unique=True)):
        body[name] = draw(_json)
    if isinstance(body.get("max_tokens"), int) and not 1 <= body["max_tokens"] <= 6:
        body["max_tokens"] = draw(st.integers(-2, 6) | st.integers(2**31, 2**70))  # keep generations short
    return (cases.CHAT if chat else cases.COMPLETIONS), body


def _well_formed(status: int, text: str, stream: bool) -> bool:
    if status != 200:
        return "error" in json.loads(text)
    if not stream:
        return json.loads(text)["choices"][0]["finish_reason"] is not None
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return bool(events) and events[-1] == "[DONE]"


def test_fuzzed_json_bodies_never_break_the_daemon(
    daemon: Daemon, http: httpx2.Client, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    before = sample(daemon.process.pid)
    statuses: dict[str, int] = {}
    bad: list[str] = []

    @settings(
        max_examples=sizes.fuzz_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(json_bodies())
    def one(drawn: tuple[str, dict[str, Any]]) -> None:
        path, body = drawn
        payload = json.dumps(body, allow_nan=False).encode()
        response = http.post(path, content=payload, headers=cases.JSON)
        _count(statuses, response.status_code)
        stream = body.get("stream") is True
        if response.status_code not in ROUTE_STATUSES or not _well_formed(response.status_code, response.text, stream):
            bad.append(f"{response.status_code} {response.text[:200]!r} for {payload[:300]!r}")
        assert daemon.process.poll() is None, f"the daemon died on {payload[:300]!r}"

    one()
    after = sample(daemon.process.pid)
    figures.append(
        {
            "scenario": "12 HTTP hostile input (hypothesis JSON)",
            "mode": sizes.name,
            "sent": sum(statuses.values()),
            "by_code": dict(sorted(statuses.items())),
            "completed": statuses.get("OK", 0),
            "lost": len(bad),
            "rss_before_mib": round(before.rss_mib, 1),
            "rss_after_mib": round(after.rss_mib, 1),
            "fds_before": before.open_fds,
            "fds_after": after.open_fds,
        }
    )
    assert not bad, f"{len(bad)} bodies got a 5xx or a malformed answer:\n" + "\n".join(bad[:20])
    assert http.get("/health").status_code == 200
    assert after.open_fds <= before.open_fds + FD_SLACK
    assert (after.rss_bytes - before.rss_bytes) / 2**20 < RSS_GROWTH_BOUND_MIB
