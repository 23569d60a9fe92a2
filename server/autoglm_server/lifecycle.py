"""The daemon's serving state: starting -> serving -> draining -> stopped.

The servicer asks it whether to admit a call; app.py moves it along and mirrors it into
grpc.health.v1. It also counts in-flight Generate streams so the drain knows when it is done.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter

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
        # A multiset: a request_id may be reused by a new stream before the old one's handler ends.
        self._in_flight: Counter[str] = Counter()
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
        self._in_flight[request_id] += 1
        self._idle.clear()

    def stream_ended(self, request_id: str) -> None:
        if self._in_flight[request_id] > 1:
            self._in_flight[request_id] -= 1
        else:
            self._in_flight.pop(request_id, None)
        if not self._in_flight:
            self._idle.set()

    def in_flight(self) -> list[str]:
        return list(self._in_flight)

    async def wait_idle(self) -> None:
        await self._idle.wait()
