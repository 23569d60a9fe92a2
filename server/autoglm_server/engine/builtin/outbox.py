"""When the running requests' gathered tokens go to the event loop: at most every `--stream-interval`.

The engine thread and the gRPC event loop share one interpreter lock, and every stream message costs
the loop a fixed amount of Python (wake-up, servicer, protobuf, write) whatever it carries; for a small
model that is a large share of a decode step (measured in docs/benchmarks.md). So the tokens of a few
steps gather in each request's Sequence and go as one delta per request. A request's first token, its
last delta and its failure go at the step that made them, on their own (core.py): time to first
token, completion and failures are never delayed, and the other requests' gathered tokens wait for
their interval instead of going along. A model whose steps outlast the interval streams every step.
"""

from __future__ import annotations


class Outbox:
    """The clock of the hand-off; the engine thread asks it once per step that gathered tokens."""

    __slots__ = ("_interval", "_since")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._since: float | None = None  # when the oldest token still gathered was produced

    def due(self, now: float) -> bool:
        """Whether the gathered tokens go now: `interval` after the step that gathered the oldest of them."""
        if self._since is None:
            self._since = now
        if self._interval <= 0.0 or now - self._since >= self._interval:
            self._since = None
            return True
        return False
