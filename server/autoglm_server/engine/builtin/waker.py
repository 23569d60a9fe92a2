"""Wakes the event loop for the engine thread, from a thread of its own.

Waking an asyncio loop from another thread is a write to its self-pipe (`call_soon_threadsafe`), and
every system call releases the interpreter lock. Under load the loop is usually already waiting for
that lock (gRPC's completions keep it busy), so the engine thread that wrote lost the lock at once and
waited out the loop's whole turn, doing nothing: measured in docs/benchmarks.md as most of the
engine's time outside the forward pass. Here the engine thread only releases a lock, which keeps the
interpreter lock; this thread then makes the write as soon as the engine thread lets the interpreter
lock go, which it does inside every torch operator of the next forward pass: the loop's turn then
overlaps the operator's computation instead of following it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class LoopWaker:
    """`wake()` schedules `callback` on `loop`; call it at most once until the callback has run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        # A binary semaphore: released by wake(), taken by the thread. The caller's once-per-callback
        # rule means it is never released twice in a row.
        self._signal = threading.Lock()
        self._signal.acquire()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="autoglm-waker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._signal.release()

    def _run(self) -> None:
        while True:
            self._signal.acquire()
            if self._closed:
                return
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self._callback)

    def close(self) -> None:
        """Stop the thread (after the engine thread has stopped calling wake)."""
        self._closed = True
        with contextlib.suppress(RuntimeError):  # a wake is already pending: the thread sees _closed
            self._signal.release()
        self._thread.join()
