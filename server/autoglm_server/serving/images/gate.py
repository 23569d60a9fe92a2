"""The process-wide budget of pixels being decoded at once (--max-decode-pixels).

Each image is checked against the per-image and per-request caps, but nothing else bounds how many
run at once: ten 40 MP images per request times many requests would decode gigabytes together. A
decode asks `DecodeGate.run` for room for its pixel count (known from the header) and waits, in
arrival order, until that many pixels are free; one that waits longer than --image-decode-wait is
refused with OverloadedError (RESOURCE_EXHAUSTED / 429 with a retry hint) rather than left hanging.

The gate lives on the event loop (no lock: only the loop touches it); the decode itself runs in a
worker thread. A caller cancelled while its thread decodes leaves the room held until the thread
ends: the pixels are in memory until then, whoever is waiting for them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from autoglm_server.errors import OverloadedError

P = ParamSpec("P")
T = TypeVar("T")

# Bounds of the retry hint, in seconds.
_MIN_RETRY_S = 0.1
_MAX_RETRY_S = 10.0
# Weight of the newest decode in the moving average of decode times.
_SMOOTHING = 0.2


class DecodeGate:
    """A weighted first-come-first-served semaphore over pixels, with a bounded wait."""

    def __init__(self, budget_pixels: int, wait_s: float) -> None:
        if budget_pixels < 1 or wait_s <= 0:
            raise ValueError("the decode budget and its wait must be positive")
        self.budget_pixels = budget_pixels
        self.wait_s = wait_s
        self.in_use = 0  # pixels granted now (decoding, or queued for a worker thread)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._decode_s = 0.05  # moving average of one decode's time, for the retry hint

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiters if not future.done())

    async def run(self, pixels: int, field: str, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `work(*args)` in a worker thread once `pixels` fit in the budget."""
        await self.acquire(pixels, field=field)
        started = time.monotonic()
        task = asyncio.ensure_future(asyncio.to_thread(work, *args, **kwargs))

        def done(finished: asyncio.Future[T]) -> None:
            self._learn(time.monotonic() - started)
            self.release(pixels)
            if not finished.cancelled():
                finished.exception()  # retrieved, so that an orphaned failure logs no warning

        task.add_done_callback(done)
        # Shielded: a cancelled caller stops waiting, but the thread cannot be stopped and its room
        # stays taken (the callback above frees it) until the thread has finished.
        return await asyncio.shield(task)

    async def acquire(self, pixels: int, *, field: str) -> None:
        """Take room for `pixels`, waiting behind earlier callers; OverloadedError after `wait_s`."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pixels, granted))
        self._wake()  # granted at once when nobody is ahead and it fits
        if granted.done():
            return
        try:
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(granted)
        except BaseException as error:
            if granted.done() and not granted.cancelled():
                self.release(pixels)  # granted just as the wait ended: give it back
            else:
                granted.cancel()  # skipped by _wake from now on
                self._wake()  # the head may have left: those behind it may fit now
            if isinstance(error, TimeoutError):
                raise self._overloaded(pixels, field) from None
            raise

    def release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._wake()

    def _fits(self, pixels: int) -> bool:
        # An image larger than the whole budget (possible only if the budget was set below
        # --max-image-pixels) decodes alone rather than never.
        return self.in_use + pixels <= self.budget_pixels or self.in_use == 0

    def _wake(self) -> None:
        # In order: a large image at the head is not overtaken by small ones for ever.
        while self._waiters:
            pixels, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()
                continue
            if not self._fits(pixels):
                return
            self._waiters.popleft()
            self.in_use += pixels
            granted.set_result(None)

    def _learn(self, seconds: float) -> None:
        self._decode_s += _SMOOTHING * (seconds - self._decode_s)

    def _overloaded(self, pixels: int, field: str) -> OverloadedError:
        queued = sum(p for p, future in self._waiters if not future.done()) + pixels
        rounds = 1 + queued / self.budget_pixels
        retry_after_s = min(_MAX_RETRY_S, max(_MIN_RETRY_S, rounds * self._decode_s))
        return OverloadedError(
            f"{field}: the server is decoding too many images at once ({self.budget_pixels} pixels,"
            f" --max-decode-pixels) and this one waited {self.wait_s:g} s for room (--image-decode-wait);"
            " retry later",
            reason="decode_busy",
            retry_after_s=retry_after_s,
        )
