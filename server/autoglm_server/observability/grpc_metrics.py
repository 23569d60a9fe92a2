"""The metrics server interceptor: counts every RPC by method and final status code.

It goes right after the tracing interceptor, so calls refused by auth or load shedding are counted
too. The count is taken in the RPC task's done callback (rpc_outcome), so client cancels and
deadlines are counted with their own codes.
"""

from __future__ import annotations

import grpc

from autoglm_server.observability import rpc_outcome
from autoglm_server.observability.metrics import Metrics
from autoglm_server.observability.rpc_outcome import CallTracker, Continuation


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Feeds autoglm_requests_total{method,code}."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        tracker = rpc_outcome.track_call(handler_call_details.method)
        tracker.add_listener(self._count)
        return await tracker.resolve(continuation, handler_call_details)

    def _count(self, tracker: CallTracker, code: grpc.StatusCode) -> None:
        self._metrics.rpc_finished(tracker.method, code)
