"""Which status did an RPC end with? The shared plumbing of the tracing, metrics and access-log
interceptors.

grpc.aio runs every RPC (interceptors included) in its own asyncio task, and a client cancel or an
expired deadline cancels that task, possibly while it waits in a `write` outside the handler. So the
one place that always sees an RPC end is that task's done callback: every interceptor registers a
listener here, and the listeners run from one done callback, with the final status code.

The handler is wrapped once per RPC (however many interceptors ask) to remember the servicer
context and the exception that ended it. A server-streaming async generator is driven by the
wrapper itself (`context.write` per message, as grpc would) so that on cancel the generator is
closed in the RPC's own task and context, not later by the garbage collector in another one: that
late close is what makes OpenTelemetry log "Failed to detach context" in other instrumentations.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

logger = logging.getLogger(__name__)

Listener = Callable[["CallTracker", grpc.StatusCode], None]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

_current: ContextVar[CallTracker | None] = ContextVar("autoglm_call_tracker", default=None)


class CallTracker:
    """Follows one RPC from the first interceptor to the end of its task."""

    __slots__ = ("_listeners", "_wrapped", "context", "error", "method", "started", "unimplemented")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.context: grpc.aio.ServicerContext[Any, Any] | None = None
        self.error: BaseException | None = None
        self.unimplemented = False
        self._listeners: list[Listener] = []
        self._wrapped: grpc.RpcMethodHandler | None = None

    @property
    def duration_s(self) -> float:
        return time.perf_counter() - self.started

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def resolve(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """Run the rest of the interceptor chain and wrap the handler it yields (once)."""
        try:
            handler = await continuation(details)
        except BaseException as exc:
            self.error = exc
            raise
        if handler is None:
            self.unimplemented = True
            return None
        if handler is self._wrapped:
            return handler
        self._wrapped = _wrap(handler, self)
        return self._wrapped

    def final_code(self) -> grpc.StatusCode:
        """The status the client got, judged after the RPC's task ended."""
        context = self.context
        code = context.code() if context is not None else None
        if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
            return code
        if self.unimplemented:
            return grpc.StatusCode.UNIMPLEMENTED
        if isinstance(self.error, asyncio.CancelledError) or (
            self.error is None and (context is None or not context.done())
        ):
            # Cancelled by the client or by its deadline; or ended without sending a status.
            return self._cancel_code()
        if self.error is not None:
            # grpc answers an unexpected exception (or an abort without a code) with UNKNOWN.
            return grpc.StatusCode.UNKNOWN
        return grpc.StatusCode.OK

    def _cancel_code(self) -> grpc.StatusCode:
        context = self.context
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED

    def _finish(self, _task: object) -> None:
        code = self.final_code()
        for listener in self._listeners:
            try:
                listener(self, code)
            except Exception:
                logger.exception("RPC end listener failed for %s", self.method)


def track_call(method: str) -> CallTracker:
    """The tracker of the RPC running in this task, created (and hooked to the task) on first use."""
    tracker = _current.get()
    if tracker is not None and tracker.method == method:
        return tracker
    tracker = CallTracker(method)
    _current.set(tracker)
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - grpc.aio always runs interceptors inside the RPC's task
        raise RuntimeError("track_call() needs the RPC's asyncio task")
    task.add_done_callback(tracker._finish)
    return tracker


def current_call() -> CallTracker | None:
    """The tracker of the RPC running in this task, if an interceptor started one."""
    return _current.get()


def _wrap(handler: grpc.RpcMethodHandler, tracker: CallTracker) -> grpc.RpcMethodHandler:
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, tracker),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, tracker),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, tracker),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        _wrap_unary(handler.unary_unary, tracker),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


Behavior = Callable[[Any, Any], Any]


def _wrap_unary(behavior: Behavior, tracker: CallTracker) -> Behavior:
    if not inspect.iscoroutinefunction(behavior):
        # A sync handler runs in grpc's thread pool; wrapping it in a coroutine would move it
        # onto the event loop. Its status is then judged without its context (see final_code).
        return behavior

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        tracker.context = context
        try:
            return await behavior(request, context)
        except BaseException as exc:
            tracker.error = exc
            raise

    return unary


def _wrap_stream(behavior: Behavior, tracker: CallTracker) -> Behavior:
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        return behavior

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        tracker.context = context
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):  # the reader/writer style: it writes itself
                await result
            else:
                await _drive(result, context)
        except BaseException as exc:
            tracker.error = exc
            raise

    return stream


async def _drive(responses: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Send each response; on any exit, close the generator here, in this task."""
    try:
        async for message in responses:
            await context.write(message)
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                logger.exception("closing the response stream failed")
