"""End to end: a real Prometheus scrapes a real daemon; an overload burst drives the saturation and
rejection alerts to firing, and they resolve once the load stops.

The rules are the production ones rendered with monitoring_rules.END_TO_END (10 s windows, `for: 2s`, a
queue of one counts as saturated): the same source, so they cannot drift from what operators apply.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import monitoring_rules
import pytest
from exported import exported_metric_names
from prometheus_server import Prometheus, running_prometheus

from autoglm_client import AsyncClient, ResourceExhaustedError
from tests.helpers.daemon import Daemon, running_daemon

MAX_RUNNING = 2
MAX_WAITING = 2
WORKERS = 4 * (MAX_RUNNING + MAX_WAITING)
NEW_TOKENS = 48
EXPECTED = {"AutoglmSaturated", "AutoglmRejectionsHigh"}
# Alerts that must stay silent through the overload: the engine lives, nothing fails server-side, auth
# is off (no key gauge), and there is no canary.
SILENT = {
    "AutoglmEngineNotAlive",
    "AutoglmErrorRatioHigh",
    "AutoglmJwtKeysStale",
    "AutoglmAuthFailuresHigh",
    "AutoglmCanaryErrorsWorse",
    "AutoglmCanaryTimeToFirstTokenWorse",
}
FIRE_TIMEOUT_S = 40.0
RESOLVE_TIMEOUT_S = 40.0


class Load:
    """WORKERS callers that each send Generate calls back to back until stopped, in their own thread."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _worker(self, client: AsyncClient, index: int) -> None:
        while not self._stop.is_set():
            try:
                await client.generate_text(f"load {index}", max_new_tokens=NEW_TOKENS, ignore_eos=True)
                self.outcomes["ok"] += 1
            except ResourceExhaustedError:
                self.outcomes["rejected"] += 1
                await asyncio.sleep(0.05)  # a short back-off: keep the two cores for the daemon

    async def _run(self) -> None:
        async with AsyncClient(self._target, timeout=60, retry=None) as client:
            await asyncio.gather(*(self._worker(client, i) for i in range(WORKERS)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "load generator did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _poll(prom: Prometheus, until: Callable[[dict[str, set[str]]], bool], timeout: float) -> list[dict[str, set[str]]]:
    """Alert states once a second until UNTIL holds; every snapshot seen, the last one satisfying it."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(prom.alert_states())
        if until(seen[-1]):
            return seen
        time.sleep(1.0)
    raise AssertionError(f"alerts did not reach the expected state in {timeout} s; last: {seen[-1:]}\n{prom.log()}")


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    args = ("--auth", "disabled", "--max-running", str(MAX_RUNNING), "--max-waiting", str(MAX_WAITING))
    with running_daemon(*args) as running:
        yield running


def test_overload_fires_saturation_and_rejection_alerts_then_they_resolve(
    prometheus_bin: str, daemon: Daemon, tmp_path: Path
) -> None:
    groups = monitoring_rules.groups(monitoring_rules.END_TO_END)
    target = f"127.0.0.1:{daemon.admin_port}"
    with running_prometheus(prometheus_bin, tmp_path, target=target, groups=groups) as prom:
        assert {g["name"] for g in prom.api("/api/v1/rules")["groups"]} == {g["name"] for g in groups}
        _poll(prom, lambda s: True, 1)  # the API answers
        with Load(daemon.target) as load:
            firing = _poll(prom, lambda s: all("firing" in s.get(a, set()) for a in EXPECTED), FIRE_TIMEOUT_S)
        assert load.outcomes["rejected"] > 0, load.outcomes
        assert load.outcomes["ok"] > 0, load.outcomes
        resolved = _poll(prom, lambda s: not EXPECTED & set(s), RESOLVE_TIMEOUT_S)

        loud = {name for snapshot in firing + resolved for name in snapshot} & SILENT
        assert loud == set(), f"alerts that should stay silent fired: {loud}"
        # What Prometheus scraped is what the registry-based name check believes the daemon exports.
        scraped = {n for n in prom.api("/api/v1/label/__name__/values") if n.startswith("autoglm_")}
        assert scraped
        assert scraped <= exported_metric_names()
    print(f"load: {dict(load.outcomes)}; fired after {len(firing)} polls, resolved after {len(resolved)}")
