"""The keyring: the current verification keys, refreshed in the background.

- A background task refreshes every `refresh_interval` seconds (jittered by ±20 % so replicas do
  not hit Vault together). On failure it keeps the last keys and retries with exponential backoff.
- An unknown kid forces one refresh, at most once per `min_interval` seconds (counted from the last
  successful or attempted refresh of any kind); concurrent callers share that one refresh.
- The key set is an immutable dict swapped whole, so readers (the verifier on the loop, the JWKS
  route on the admin thread) never see half an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from autoglm_server.auth.keys import VerificationKey
from autoglm_server.auth.sources import KeySource

logger = logging.getLogger(__name__)

_JITTER = 0.2
_FIRST_BACKOFF_S = 1.0

KeysListener = Callable[[Mapping[str, VerificationKey]], None]


class Keyring:
    def __init__(
        self,
        source: KeySource,
        *,
        refresh_interval: float,
        min_interval: float,
        max_staleness: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refresh_interval = refresh_interval
        self._min_interval = min_interval
        self._max_staleness = max_staleness
        self._clock = clock
        self._keys: Mapping[str, VerificationKey] = MappingProxyType({})
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._inflight: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[KeysListener] = []

    @property
    def keys(self) -> Mapping[str, VerificationKey]:
        return self._keys

    def add_listener(self, listener: KeysListener) -> None:
        """Called (on the loop) with the new key set after every successful refresh."""
        self._listeners.append(listener)

    def key_age_seconds(self) -> float | None:
        """Seconds since the last successful fetch; None if keys were never fetched."""
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    def is_fresh(self) -> bool:
        age = self.key_age_seconds()
        return age is not None and age <= self._max_staleness

    async def refresh(self) -> bool:
        """Fetch the keys now (shared with a refresh already in flight); True when it succeeded."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        loop = asyncio.get_running_loop()
        self._inflight = future = loop.create_future()
        self._last_attempt = self._clock()
        try:
            keys = await asyncio.to_thread(self._source.fetch)
            self._install(keys)
        except asyncio.CancelledError:
            future.set_result(False)  # waiters see a failed refresh, not our cancellation
            raise
        except Exception as exc:
            self._log_failure(exc)
            future.set_result(False)
            return False
        finally:
            self._inflight = None
        future.set_result(True)
        return True

    def _log_failure(self, exc: Exception) -> None:
        age = self.key_age_seconds()
        logger.warning(
            "fetching keys from %s failed (%s: %s); keeping %d keys, age %s s",
            self._source.name,
            type(exc).__name__,
            " ".join(str(exc).split()),  # Vault's multi-line errors, on one log line
            len(self._keys),
            "never fetched" if age is None else f"{age:.0f}",
        )

    def _install(self, keys: dict[str, VerificationKey]) -> None:
        changed = set(keys) != set(self._keys)
        self._keys = MappingProxyType(dict(keys))
        self._fetched_at = self._clock()
        if changed:
            logger.info("verification keys from %s: %s", self._source.name, ", ".join(sorted(keys)) or "none")
        for listener in self._listeners:
            listener(self._keys)

    async def lookup(self, kid: str) -> VerificationKey | None:
        """The key with this kid, forcing one rate-limited refresh when it is unknown."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._inflight is None:
            last = self._last_attempt
            if last is not None and self._clock() - last < self._min_interval:
                return None
        await self.refresh()
        return self._keys.get(kid)

    def start(self) -> None:
        """Start the background refresh loop (call after the first refresh)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="auth-key-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF_S
        delay = self._jittered(self._refresh_interval)
        while True:
            await asyncio.sleep(delay)
            if await self.refresh():
                backoff = _FIRST_BACKOFF_S
                delay = self._jittered(self._refresh_interval)
            else:
                delay = self._jittered(min(backoff, self._refresh_interval))
                backoff *= 2

    @staticmethod
    def _jittered(seconds: float) -> float:
        return seconds * random.uniform(1 - _JITTER, 1 + _JITTER)
