"""Where an engine step's time goes: the forward pass against the engine's own work around it.

The engine thread laps a clock at each phase boundary of a step (about a microsecond per step in
all), so the split is always on: `/metrics` exports it (autoglm_engine_phase_seconds) and
`autoglm-server bench` reports it per step. A busy engine runs its steps back to back, so the sum
of the phases is the engine's wall time while it had work; `forward` is the model call alone, and
everything else is overhead that a GPU would not hide either. On CUDA the forward is asynchronous:
its time shows up in `sample`, where the first read of its result waits for it.

`deliver` is timed on the event loop (handing a step's deltas to the requests' mailboxes) and
overlaps the engine's phases. The engine thread's CPU time (`cpu`, `forward_cpu`) tells time on a
core from time spent waiting for one, or for the interpreter lock the event loop holds.
"""

from __future__ import annotations

import time

# The phases of one engine step, in order; their sum is the step's wall time.
PHASES = ("schedule", "forward", "sample", "output", "handoff")


class StepTimers:
    """Cumulative seconds per phase, lapped by the engine thread (deliver by the event loop)."""

    __slots__ = ("_cpu_start", "_forward_cpu_start", "_last", "deliver", "seconds", "steps")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys((*PHASES, "cpu", "forward_cpu"), 0.0)
        self.deliver = 0.0  # written only by the event loop
        self.steps = 0
        self._last = 0.0
        self._cpu_start = 0.0
        self._forward_cpu_start = 0.0

    def start(self) -> None:
        """A step begins (the engine had work)."""
        self._last = time.perf_counter()
        self._cpu_start = time.thread_time()

    def lap(self, phase: str) -> None:
        """The time since the last lap was spent in `phase`."""
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now

    def forward_started(self) -> None:
        self.lap("schedule")
        self._forward_cpu_start = time.thread_time()

    def forward_ended(self) -> None:
        self.lap("forward")
        self.seconds["forward_cpu"] += time.thread_time() - self._forward_cpu_start

    def stop(self) -> None:
        """The step ended after its hand-off."""
        self.lap("handoff")
        self.seconds["cpu"] += time.thread_time() - self._cpu_start
        self.steps += 1

    def snapshot(self) -> dict[str, float]:
        """Seconds per phase (and `deliver`, `cpu`, `forward_cpu`) so far; read from any thread."""
        out = dict(self.seconds)
        out["deliver"] = self.deliver
        return out
