"""A one-line progress bar on stderr (the client keeps its dependencies to grpcio and protobuf)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TextIO

_WIDTH = 30


class ProgressLine:
    """Redraws `[####----] done/total ...` in place; `counts` returns (completed, errors, tokens)."""

    def __init__(self, total: int, counts: Callable[[], tuple[int, int, int]], stream: TextIO | None = None) -> None:
        self._total = total
        self._counts = counts
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.perf_counter()

    def render(self) -> str:
        completed, errors, tokens = self._counts()
        done = completed + errors
        filled = _WIDTH * done // self._total if self._total else _WIDTH
        elapsed = time.perf_counter() - self._start
        rate = tokens / elapsed if elapsed > 0 else 0.0
        return (
            f"[{'#' * filled}{'-' * (_WIDTH - filled)}] {done}/{self._total} requests"
            f"  {errors} errors  {rate:.1f} tok/s  {elapsed:.1f}s"
        )

    def draw(self) -> None:
        self._stream.write("\r" + self.render())
        self._stream.flush()

    async def run(self, interval_s: float = 0.2) -> None:
        """Redraw every `interval_s` until cancelled."""
        self._start = time.perf_counter()
        while True:
            self.draw()
            await asyncio.sleep(interval_s)

    def finish(self) -> None:
        self.draw()
        self._stream.write("\n")
        self._stream.flush()
