"""Download progress in the log: bytes, rate and ETA, at most one line per interval."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class Progress:
    """Counts bytes from many threads; logs `fetched A/B MiB (P%) at R MiB/s, ETA S s` now and then."""

    def __init__(self, what: str, total: int, already: int = 0, interval_s: float = 5.0) -> None:
        self._what = what
        self._total = total
        self._done = already
        self._fetched = 0  # this run only: the rate does not count what an earlier run left
        self._interval = interval_s
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_log = self._started

    @property
    def fetched(self) -> int:
        return self._fetched

    def add_resumed(self, count: int) -> None:
        """Bytes an earlier run fetched: they count toward done, not toward this run's rate."""
        with self._lock:
            self._done += count

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            self._fetched += count
            now = time.monotonic()
            if now - self._last_log < self._interval:
                return
            self._last_log = now
            done, fetched, elapsed = self._done, self._fetched, now - self._started
        rate = fetched / elapsed if elapsed > 0 else 0.0
        eta = (self._total - done) / rate if rate > 0 else float("inf")
        log.info(
            "fetching %s: %.0f/%.0f MiB (%.0f%%) at %.1f MiB/s, ETA %.0f s",
            self._what, done / MIB, self._total / MIB, 100 * done / max(1, self._total), rate / MIB, eta,
        )  # fmt: skip

    def elapsed(self) -> float:
        return time.monotonic() - self._started
