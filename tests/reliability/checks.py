"""What every scenario checks at its end: the engine is idle again and the metrics agree with the ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

import grpc

from tests.helpers.daemon import Daemon
from tests.helpers.ledger import Ledger
from tests.helpers.scrape import Snapshot, scrape, scrape_or_empty

# --auth disabled: these scenarios are about the engine; test_vault_faults runs with auth on.
BASE_ARGS = ("--auth", "disabled", "--torch-threads", "1", "--log-level", "warning")

# Codes the client and the server always agree on; a cancel or deadline can race a normal end
# (the client gives up while the server already sent Finished), so those are compared as a group.
DEFINITE_CODES = (
    "RESOURCE_EXHAUSTED",
    "INVALID_ARGUMENT",
    "UNAVAILABLE",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "INTERNAL",
    "UNKNOWN",
)
RACY_CODES = ("OK", "CANCELLED", "DEADLINE_EXCEEDED")
IDLE_TIMEOUT_S = 15.0


def generate_codes(snapshot: Snapshot) -> dict[str, float]:
    """autoglm_requests_total of Generate, by code."""
    out: dict[str, float] = {}
    for (name, labels), value in snapshot.samples.items():
        found = dict(labels)
        if name == "autoglm_requests_total" and found.get("method", "").endswith("Generate"):
            out[found["code"]] = out.get(found["code"], 0.0) + value
    return out


def grpc_stream_codes(snapshot: Snapshot) -> dict[str, float]:
    """autoglm_requests_total of the gRPC streaming calls (Generate and Chat), by code."""
    out: dict[str, float] = {}
    for (name, labels), value in snapshot.samples.items():
        found = dict(labels)
        if name == "autoglm_requests_total" and found.get("method", "").endswith(("/Generate", "/Chat")):
            out[found["code"]] = out.get(found["code"], 0.0) + value
    return out


# The HTTP routes that generate (their requests_total series carry protocol="http").
HTTP_GENERATE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})


def http_codes(snapshot: Snapshot) -> dict[str, float]:
    """autoglm_requests_total of the HTTP completion routes, by code."""
    out: dict[str, float] = {}
    for (name, labels), value in snapshot.samples.items():
        found = dict(labels)
        if (
            name == "autoglm_requests_total"
            and found.get("protocol") == "http"
            and found.get("method") in HTTP_GENERATE_ROUTES
        ):
            out[found["code"]] = out.get(found["code"], 0.0) + value
    return out


CodesOf = Callable[[Snapshot], dict[str, float]]


def engine_load(snapshot: Snapshot) -> tuple[float, float, float]:
    return (
        snapshot.value("autoglm_requests_running"),
        snapshot.value("autoglm_requests_waiting"),
        snapshot.value("autoglm_token_budget_used"),
    )


async def wait_engine_idle(daemon: Daemon, timeout_s: float = IDLE_TIMEOUT_S) -> Snapshot:
    """Poll /metrics until running, waiting and reserved tokens are all 0 (fail after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot = await asyncio.to_thread(scrape, daemon.admin_url)
        load = engine_load(snapshot)
        if load == (0.0, 0.0, 0.0):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"engine not idle {timeout_s} s after the scenario: running, waiting, budget = {load}")
        await asyncio.sleep(0.1)


async def quiet_snapshot(daemon: Daemon, settle_s: float = 0.3, codes_of: CodesOf = generate_codes) -> Snapshot:
    """A scrape taken once the engine is idle and the request counters stopped moving.

    The server counts an RPC when its task ends, a moment after the client saw the end: a scrape
    taken right after earlier calls could miss some of them and blame the scenario for them.
    """
    await wait_engine_idle(daemon)
    previous = await asyncio.to_thread(scrape_or_empty, daemon.admin_url)
    while True:
        await asyncio.sleep(settle_s)
        current = await asyncio.to_thread(scrape_or_empty, daemon.admin_url)
        if codes_of(current) == codes_of(previous):
            return current
        previous = current


async def assert_metrics_match(
    daemon: Daemon, before: Snapshot, ledger: Ledger, *, timeout_s: float = 10.0, codes_of: CodesOf = generate_codes
) -> dict[str, int]:
    """autoglm_requests_total{Generate} (or what `codes_of` selects) grew by exactly what the ledger recorded.

    The server counts a call when its task ends, which can be a moment after the client saw the end,
    so this polls until the totals agree or timeout_s passes.
    """
    deadline = time.monotonic() + timeout_s
    # A call the client cancelled before the server's first message may never have reached a handler
    # (gRPC drops a stream cancelled while it still waits for one), and then no interceptor counts it:
    # the server's total may fall short by at most those calls, and only among the racy codes.
    unseen = sum(1 for o in ledger.outcomes if o.code == grpc.StatusCode.CANCELLED and not o.started)
    while True:
        after = await asyncio.to_thread(scrape, daemon.admin_url)
        start, end = codes_of(before), codes_of(after)
        server = {code: int(end[code] - start.get(code, 0.0)) for code in end if end[code] - start.get(code, 0.0)}
        if sum(server.values()) >= ledger.sent or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    client = ledger.by_code()
    counted = sum(server.values())
    problems = (
        [f"{ledger.sent} sent ({unseen} cancelled before their first message), the server counted {counted}"]
        if not ledger.sent - unseen <= counted <= ledger.sent
        else []
    )
    for code in DEFINITE_CODES:
        if server.get(code, 0) != client.get(code, 0):
            problems.append(f"{code}: server {server.get(code, 0)}, client {client.get(code, 0)}")
    racy_server = sum(server.get(code, 0) for code in RACY_CODES)
    racy_client = sum(client.get(code, 0) for code in RACY_CODES)
    if not racy_client - unseen <= racy_server <= racy_client or server.get("OK", 0) < client.get("OK", 0):
        problems.append(f"OK/CANCELLED/DEADLINE_EXCEEDED: server {server}, client {client}")
    assert not problems, "metrics disagree with the ledger: " + "; ".join(problems)
    return server


def codes(*names: str) -> Collection[grpc.StatusCode]:
    return frozenset(grpc.StatusCode[name] for name in names)
