"""grpc.health.v1: liveness on the empty service name, readiness on the generation service."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from autoglm_server import names

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Owns the health servicer and only ever sets it from two booleans."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self._live: bool | None = None
        self._ready: bool | None = None

    async def set(self, *, live: bool, ready: bool) -> None:
        if live != self._live:
            await self.servicer.set(names.LIVENESS_SERVICE, SERVING if live else NOT_SERVING)
            self._live = live
        if ready != self._ready:
            await self.servicer.set(names.READINESS_SERVICE, SERVING if ready else NOT_SERVING)
            self._ready = ready

    @property
    def ready(self) -> bool:
        return bool(self._ready)
