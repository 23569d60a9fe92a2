"""The daemon's serving state: starting -> serving -> draining -> stopped.

The servicer asks it whether to admit a call; app.py moves it along and mirrors it into
grpc.health.v1. It also counts in-flight Generate streams so the drain knows when it is done.
"""

from __future__ import annotations

import asyncio
import enum

from autoglm_server.errors import UnavailableError


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class ServingState:
    """Admission gate plus in-flight stream bookkeeping (event-loop only)."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self._in_flight: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.drain_expired = False

    def check_admission(self) -> None:
        """Raise UNAVAILABLE unless new calls are being accepted."""
        if self.phase is Phase.STARTING:
            raise UnavailableError("the model is still loading; retry shortly")
        if self.phase is not Phase.SERVING:
            raise UnavailableError("the server is draining for shutdown; retry on another replica")

    def stream_started(self, request_id: str) -> None:
        self._in_flight.add(request_id)
        self._idle.clear()

    def stream_ended(self, request_id: str) -> None:
        self._in_flight.discard(request_id)
        if not self._in_flight:
            self._idle.set()

    def in_flight(self) -> list[str]:
        return list(self._in_flight)

    async def wait_idle(self) -> None:
        await self._idle.wait()
