"""Scenario 6: Vault faults with auth on. The daemon reaches a real OpenBao through a TCP proxy that
the test slows down and cuts off, while Generate streams flow with valid tokens and the transit key
rotates every second.

Phases: normal (tokens from each new version once it is 1.5 s old) -> Vault slowed -> Vault down
(tokens from a version the daemon already has; readiness turns NOT_SERVING once the keys are older
than --key-max-staleness, yet valid calls still succeed) -> Vault back (refresh resumes, no
restart). No valid request fails at any point; forged and malformed tokens get UNAUTHENTICATED and
a token without the scope PERMISSION_DENIED, never UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hvac
import pytest
from grpc_health.v1 import health_pb2

from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.mint import MintRequest, mint_token
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultSession
from tests.helpers import calls
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.ledger import Expectation, Ledger
from tests.helpers.openbao import OpenBao, running_openbao
from tests.helpers.scrape import scrape
from tests.helpers.tcp_delay_proxy import TcpDelayProxy, tcp_delay_proxy
from tests.reliability.checks import assert_metrics_match, codes, quiet_snapshot
from tests.reliability.sizes import Sizes

KEY = "autoglm-jwt"
STALENESS_S = 4.0
SLOW_DELAY_S = 0.3  # per relayed chunk; below --vault-request-timeout
DAEMON_ARGS = (
    "--torch-threads", "1",
    "--log-level", "warning",
    "--key-refresh-interval", "0.5",
    "--key-refresh-min-interval", "0.2",
    "--key-max-staleness", str(STALENESS_S),
    "--vault-request-timeout", "2",
)  # fmt: skip
VALID_WORKERS = 3
EXPECT = {
    "valid": Expectation(codes("OK")),
    "bad_token": Expectation(codes("UNAUTHENTICATED")),
    "no_scope": Expectation(codes("PERMISSION_DENIED")),
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _session(server: OpenBao) -> VaultSession:
    return VaultSession(VaultSettings.model_validate({"vault_addr": server.addr, "vault_token": server.root_token}))


def _mint(server: OpenBao, scope: str = "generate", min_key_age_s: float = 0.0) -> str:
    request = MintRequest("reliability", scope.split(), 600, "autoglm-serve", ["autoglm"], min_key_age_s=min_key_age_s)
    return mint_token(_session(server), "transit", KEY, request)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(valid: str) -> dict[str, str]:
    """Authorization header values that must each get UNAUTHENTICATED."""
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    flipped = ("A" if signature[5] != "A" else "B").join((signature[:5], signature[6:]))
    return {
        "alg none": f"Bearer {_b64({'alg': 'none', 'kid': kid})}.{payload}.",
        "HS256 with a public kid": f"Bearer {_b64({'alg': 'HS256', 'kid': kid})}.{payload}.{signature}",
        "tampered payload": f"Bearer {header}.{_b64({**claims, 'sub': 'admin'})}.{signature}",
        "tampered signature": f"Bearer {header}.{payload}.{flipped}",
        "unknown kid": f"Bearer {_b64({'alg': 'ES256', 'kid': KEY + ':v999'})}.{payload}.{signature}",
        "9 KiB token": "Bearer " + "A" * 9216,
        "not a JWT": "Bearer not-a-jwt",
        "no Bearer prefix": valid,
        "empty": "Bearer ",
        "garbage segments": "Bearer ....",
    }


@dataclass
class Tokens:
    """The token valid callers use now, and how old a version the minter signs with."""

    current: str
    min_key_age_s: float = 1.5
    kids: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def vault() -> Iterator[OpenBao]:
    with running_openbao() as server:
        plan = BootstrapPlan("transit", KEY, 3600, "approle", "kubernetes", "", "", "autoglm", "autoglm", 3600)
        bootstrap(_session(server), plan)
        yield server


async def _rotate(server: OpenBao, tokens: Tokens, stop: asyncio.Event) -> None:
    root = hvac.Client(url=server.addr, token=server.root_token)
    while not stop.is_set():
        await asyncio.to_thread(root.secrets.transit.rotate_key, KEY)
        token = await asyncio.to_thread(_mint, server, "generate", tokens.min_key_age_s)
        tokens.kids.add(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])
        tokens.current = token
        await asyncio.sleep(1.0)


async def _valid_caller(service: Any, ledger: Ledger, tokens: Tokens, stop: asyncio.Event, n: int) -> None:
    i = 0
    while not stop.is_set():
        metadata = (("authorization", f"Bearer {tokens.current}"),)
        plan = calls.CallPlan("valid", calls.request(f"vault {n} {i}", 8), timeout_s=30, metadata=metadata)
        await calls.run_call(service, plan, ledger)
        i += 1
        await asyncio.sleep(0.05)


async def _bad_caller(service: Any, ledger: Ledger, server: OpenBao, stop: asyncio.Event) -> None:
    no_scope = await asyncio.to_thread(_mint, server, "models:read", 3600)
    bad = list(bad_tokens(await asyncio.to_thread(_mint, server, "generate", 3600)).values())
    i = 0
    while not stop.is_set():
        plan = calls.CallPlan(
            "bad_token", calls.request("forged", 8), timeout_s=30, metadata=(("authorization", bad[i % len(bad)]),)
        )
        await calls.run_call(service, plan, ledger)
        if i % len(bad) == 0:
            plan = calls.CallPlan(
                "no_scope", calls.request("scope", 8), timeout_s=30, metadata=(("authorization", f"Bearer {no_scope}"),)
            )
            await calls.run_call(service, plan, ledger)
        i += 1
        await asyncio.sleep(0.1)


async def _watch_readiness(daemon: Any, seen: list[tuple[str, int]], phase: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            status = await asyncio.to_thread(daemon.health)
        except Exception:
            status = -1
        seen.append((phase[0], status))
        await asyncio.sleep(0.25)


async def test_vault_slow_down_and_restart_fail_no_valid_request(
    vault: OpenBao, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    ledger = Ledger()
    readiness: list[tuple[str, int]] = []
    phase = ["normal"]
    tokens = Tokens(current=_mint(vault, min_key_age_s=0))
    with tcp_delay_proxy("127.0.0.1", vault.port) as proxy:
        env = {"VAULT_ADDR": proxy.addr, "VAULT_TOKEN": vault.root_token}
        with running_daemon(*DAEMON_ARGS, env=env) as daemon:
            before = await quiet_snapshot(daemon)
            stop = asyncio.Event()
            async with calls.insecure_channel(daemon.target) as channel:
                service = calls.stub(channel)
                tasks = [
                    asyncio.create_task(_rotate(vault, tokens, stop)),
                    asyncio.create_task(_bad_caller(service, ledger, vault, stop)),
                    asyncio.create_task(_watch_readiness(daemon, readiness, phase, stop)),
                    *(
                        asyncio.create_task(_valid_caller(service, ledger, tokens, stop, n))
                        for n in range(VALID_WORKERS)
                    ),
                ]
                back_at = time.time()
                try:
                    back_at = await _run_phases(daemon, proxy, tokens, phase, readiness, sizes.vault_s)
                finally:
                    stop.set()
                    await asyncio.gather(*tasks)
            refreshed = scrape(daemon.admin_url).value("autoglm_key_last_refresh_timestamp_seconds")
            server_codes = await assert_metrics_match(daemon, before, ledger)
            assert daemon.process.poll() is None
    ledger.verify(EXPECT)
    by_phase = {name: {s for p, s in readiness if p == name} for name in ("normal", "slow", "down", "back")}
    assert NOT_SERVING in by_phase["down"], f"staleness rule: readiness while Vault was down: {by_phase['down']}"
    assert readiness[-1][1] == SERVING, f"readiness after Vault came back: {readiness[-4:]}"
    assert refreshed >= back_at, "the key refresh did not resume after Vault came back"
    figures.append(
        ledger.figures(
            "6 Vault faults",
            EXPECT,
            mode=sizes.name,
            signing_versions=len(tokens.kids),
            proxy_connections=proxy.connections,
            readiness_by_phase={k: sorted(_status_name(s) for s in v) for k, v in by_phase.items()},
            server_codes=server_codes,
        )
    )


def _status_name(status: int) -> str:
    return "unreachable" if status < 0 else health_pb2.HealthCheckResponse.ServingStatus.Name(status)


# How long the phases below wait for an event (readiness seen, a refresh) before going on anyway;
# the asserts then fail with what was seen. Only a broken daemon gets near it.
EVENT_BOUND_S = 60.0


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = EVENT_BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def _run_phases(
    daemon: Daemon,
    proxy: TcpDelayProxy,
    tokens: Tokens,
    phase: list[str],
    readiness: list[tuple[str, int]],
    outage_s: float,
) -> float:
    """Drive the phases; returns the wall-clock time Vault came back.

    Each phase lasts at least its share of outage_s (the load), and the outage and the recovery last
    until the daemon was seen reacting (an event), however slowly a loaded machine gets there.
    """
    await asyncio.sleep(outage_s / 2)
    phase[0] = "slow"
    proxy.forward(delay_s=SLOW_DELAY_S)
    tokens.min_key_age_s = 4.0  # slower refreshes: sign with versions every verifier has had time to see
    await asyncio.sleep(outage_s / 2)
    phase[0] = "down"
    tokens.min_key_age_s = 3600.0  # nobody can fetch new versions: sign with the oldest live one
    proxy.refuse()
    await asyncio.sleep(outage_s)

    async def not_serving_seen() -> bool:
        return (phase[0], NOT_SERVING) in readiness

    await _until(not_serving_seen)  # the staleness rule must have fired while Vault was down
    phase[0] = "back"
    back_at = time.time()
    proxy.forward()

    async def refreshed_since_back() -> bool:
        snapshot = await asyncio.to_thread(scrape, daemon.admin_url)
        return snapshot.value("autoglm_key_last_refresh_timestamp_seconds") >= back_at

    await _until(refreshed_since_back)  # a refresh lands before tokens from new versions appear again
    tokens.min_key_age_s = 1.5
    await asyncio.sleep(outage_s / 2)

    async def serving_again() -> bool:
        return readiness[-1] == ("back", SERVING)

    await _until(serving_again)
    return back_at
