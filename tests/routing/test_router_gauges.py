"""The gauges an inference router scrapes, on a running daemon (built-in engine, builtin:tiny).

Pins the names, types and meanings the llm-d router reads from the HTTP port's /metrics (the pool's
target port): one series each, TYPE gauge, waiting and running above 0 during a burst and back at 0
after it, the KV fraction in [0, 1]. The same body is on the admin port. The router's control
headers must change nothing: not who may call, not in which order the queue is served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import openai
import pytest

from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.router_gauges import CACHE_CONFIG, RouterGauges, fetch, read_router_gauges
from tests.openai.support import wait_for

SERVED = "autoglm-phone-9b"
MESSAGES = [{"role": "user", "content": "Open settings"}]
# One batch row and a queue behind it: a burst is then both running and waiting.
MAX_RUNNING = 1
MAX_WAITING = 8
LONG = 1800  # builtin:tiny's context is 2,048 tokens; the tests cancel such streams, never wait for them
# The headers the router sets or reads for its own decisions; the daemon must ignore every one of them.
ROUTER_CONTROL_HEADERS = {
    "x-llm-d-inference-objective": "critical",
    "x-gateway-inference-objective": "critical",
    "x-llm-d-inference-fairness-id": "vip",
    "x-gateway-destination-endpoint": "127.0.0.1:1",
    "x-llm-d-slo-ttft-ms": "1",
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    args = ["--auth", "disabled", "--served-model-name", SERVED, "--max-running", str(MAX_RUNNING)]
    with running_daemon(*args, "--max-waiting", str(MAX_WAITING), "--max-new-tokens-limit", str(LONG)) as running:
        yield running


def _http_root(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.http_port}"


class Streams:
    """Long streams held open in threads until closed; each records when its first token came."""

    def __init__(self, daemon: Daemon) -> None:
        self._client = openai.OpenAI(base_url=daemon.http_url, api_key="unused", max_retries=0, timeout=120)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.first_token_order: list[str] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._cut: set[str] = set()

    def open(self, label: str, *, priority: int = 0, headers: dict[str, str] | None = None) -> None:
        def run() -> None:
            try:
                stream = self._client.chat.completions.create(
                    model=SERVED, messages=MESSAGES, max_tokens=LONG, stream=True,  # type: ignore[arg-type]
                    extra_body={"ignore_eos": True, "priority": priority}, extra_headers=headers or {},
                )  # fmt: skip
                with stream:
                    for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            with self._lock:
                                if label not in self.first_token_order:
                                    self.first_token_order.append(label)
                        if self._stop.is_set() or label in self._cut:
                            return
            except BaseException as error:  # reported by the test, not lost in the thread
                self.errors.append(error)

        thread = threading.Thread(target=run, name=f"stream-{label}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def cut(self, label: str) -> None:
        """Close one stream (the daemon aborts its request at the next step)."""
        with self._lock:
            self._cut.add(label)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self._client.close()


@pytest.fixture
def streams(daemon: Daemon) -> Iterator[Streams]:
    with ExitStack() as stack:
        held = Streams(daemon)
        stack.callback(held.close)
        yield held


def _until(daemon: Daemon, check: Callable[[RouterGauges], bool], what: str) -> RouterGauges:
    def probe() -> RouterGauges | None:
        gauges = read_router_gauges(_http_root(daemon))
        return gauges if check(gauges) else None

    return wait_for(probe, timeout=60, what=what, interval=0.05)


def test_idle_gauges_are_typed_single_series_and_zero(daemon: Daemon) -> None:
    for root in (_http_root(daemon), daemon.admin_url):
        gauges = read_router_gauges(root)
        assert (gauges.waiting, gauges.running, gauges.kv_usage) == (0, 0, 0)
        assert gauges.model_name == SERVED
        # The built-in engine has no KV blocks: no cache info, and the router falls back to its defaults.
        assert gauges.cache_config is None
    body, _ = fetch(f"{_http_root(daemon)}/metrics")
    assert CACHE_CONFIG not in body
    # Our own names stay beside the router's.
    assert "autoglm_requests_waiting{" in body
    assert "autoglm_token_budget_used{" in body


def test_a_burst_moves_the_gauges_and_they_return_to_zero(daemon: Daemon, streams: Streams) -> None:
    for i in range(4):
        streams.open(f"s{i}")
    busy = _until(daemon, lambda g: g.running > 0 and g.waiting > 0, "running > 0 and waiting > 0")
    assert busy.running == MAX_RUNNING
    assert 0 < busy.kv_usage <= 1
    admin = read_router_gauges(daemon.admin_url)  # the admin port serves the same gauges
    assert admin.running == MAX_RUNNING
    assert admin.waiting > 0
    streams.close()
    idle = _until(daemon, lambda g: g.running == 0 and g.waiting == 0, "running and waiting back at 0")
    assert idle.kv_usage == 0
    assert streams.errors == []


def test_router_control_headers_do_not_raise_priority(daemon: Daemon, streams: Streams) -> None:
    """Behind a busy row, a request claiming the router's 'critical' objective in headers waits behind a
    later one whose body asks priority 1: only the body's priority (the API's own field) counts."""
    streams.open("holder")
    _until(daemon, lambda g: g.running == 1, "the holder running")
    streams.open("claims-critical", priority=0, headers=ROUTER_CONTROL_HEADERS)
    _until(daemon, lambda g: g.waiting == 1, "the header-carrying request queued")
    streams.open("body-priority", priority=1)
    _until(daemon, lambda g: g.waiting == 2, "both requests queued")
    streams.cut("holder")
    _until(daemon, lambda g: len(streams.first_token_order) >= 2, "the next request streaming")
    assert streams.first_token_order[:2] == ["holder", "body-priority"]
    assert streams.errors == []
