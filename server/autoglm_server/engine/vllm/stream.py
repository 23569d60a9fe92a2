"""One request's stream over vLLM's per-request output collector."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from autoglm_server.engine.types import GenerationDelta
from autoglm_server.engine.vllm.outputs import OutputState, to_delta
from autoglm_server.errors import AutoglmError, DeadlineExceededError, EngineFailedError


class StreamOwner(Protocol):
    """What a stream needs of the engine that made it (engine.py's VllmEngine). The engine passes
    itself in, so this module never imports engine.py and the two stay out of a circle."""

    failed: bool
    loop: asyncio.AbstractEventLoop | None

    def release(self, request_id: str, key: str, tenant: str, abort: bool, service_time_s: float | None) -> None:
        """Free the request's admission slot; abort it in vLLM when it had not finished."""


class VllmRequestStream:
    """The async iterator of one request's deltas; closing or dropping it early aborts it in vLLM.

    A class rather than an async generator, as in the built-in engine: a generator closed before its
    first iteration never runs its `finally`, and the abort would be lost.
    """

    def __init__(self, engine: StreamOwner, request_id: str, key: str, collector: Any, state: OutputState) -> None:
        self._engine = engine
        self._request_id = request_id
        self._key = key
        self._collector = collector
        self._state = state
        self._started = time.monotonic()
        self._finished = False
        self._closed = False

    def __aiter__(self) -> VllmRequestStream:
        return self

    async def __anext__(self) -> GenerationDelta:
        if self._finished or self._closed:
            raise StopAsyncIteration
        try:
            output = await self._next_output()
        except BaseException:  # deadline, engine death, or the consumer cancelled while waiting
            self._close()
            raise
        delta = to_delta(self._state, output)
        if delta.finished:
            self._finished = True
            self._close()
        return delta

    async def _next_output(self) -> Any:
        deadline = self._state.request.deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready = self._collector.get_nowait()  # raises what vLLM propagated, as get() does
            if ready is not None:
                return ready
            return await asyncio.wait_for(self._collector.get(), timeout)
        except TimeoutError:
            raise DeadlineExceededError("the request's deadline passed") from None
        except AutoglmError:
            raise
        except Exception as exc:  # vLLM's EngineDeadError and what its output handler propagates
            if self._engine.failed:
                raise EngineFailedError("the engine failed; the daemon is restarting") from exc
            raise EngineFailedError("the vLLM engine failed this request") from exc

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            service = time.monotonic() - self._started if self._finished else None
            self._engine.release(self._request_id, self._key, self._state.request.tenant, not self._finished, service)

    def __del__(self) -> None:
        # Finalized by the garbage collector possibly on another thread: hand the release to the loop.
        if self._closed:
            return
        loop = self._engine.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close)
