"""Per engine step: the forward pass against everything else, read from the daemon while it runs.

Before and after each daemon run the bench scrapes the daemon's /metrics (the engine's own phase
timers, engine/builtin/timers.py) and, where /proc is there (Linux), the CPU time of each of the
daemon's threads. The differences divided by the steps taken give, per step: the forward's wall
time, the engine's own work around it (schedule, sample, output, handoff), the event loop's
delivery, and the CPU of the engine thread, the event loop (the main thread: gRPC servicers,
protobuf, HTTP) and every other thread (gRPC's core pollers).
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from autoglm_server.engine.builtin.timers import PHASES

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Snapshot:
    """The daemon's cumulative timers at one moment."""

    phases: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    thread_cpu_s: dict[int, float] = field(default_factory=dict)  # thread id -> user+system CPU


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid` from /proc (empty where there is no /proc)."""
    out: dict[int, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        # After the command: state is field 3 of stat(5), utime 14 and stime 15.
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def scrape(admin_url: str, pid: int) -> Snapshot:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as reply:  # noqa: S310 - our own daemon
        text = reply.read().decode()
    snapshot = Snapshot(thread_cpu_s=thread_cpu(pid))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "autoglm_engine_phase_seconds_total":
                snapshot.phases[sample.labels["phase"]] = sample.value
            elif sample.name == "autoglm_engine_timed_steps_total":
                snapshot.steps = int(sample.value)
    return snapshot


def per_step(before: Snapshot, after: Snapshot, pid: int) -> dict[str, Any]:
    """Milliseconds per step between two snapshots (an empty dict when no step was timed)."""
    steps = after.steps - before.steps
    if steps <= 0 or not after.phases:
        return {}

    def ms(seconds: float) -> float:
        return round(1000.0 * seconds / steps, 4)

    delta = {k: after.phases.get(k, 0.0) - before.phases.get(k, 0.0) for k in after.phases}
    wall = sum(delta.get(p, 0.0) for p in PHASES)
    out: dict[str, Any] = {"steps": steps, "step_ms": ms(wall), "forward_ms": ms(delta.get("forward", 0.0))}
    out["non_forward_ms"] = ms(wall - delta.get("forward", 0.0))
    for phase in PHASES:
        if phase != "forward":
            out[f"{phase}_ms"] = ms(delta.get(phase, 0.0))
    for key in ("deliver", "cpu", "forward_cpu"):
        out[f"{key}_ms"] = ms(delta.get(key, 0.0))
    if after.thread_cpu_s:
        cpu = {t: s - before.thread_cpu_s.get(t, 0.0) for t, s in after.thread_cpu_s.items()}
        loop = cpu.pop(pid, 0.0)  # the main thread runs the event loop
        engine = delta.get("cpu", 0.0)
        # The engine thread is the one whose CPU the engine's own timer matches best.
        engine_tid = min(cpu, key=lambda t: abs(cpu[t] - engine), default=None)
        engine_proc = cpu.pop(engine_tid, 0.0) if engine_tid is not None else 0.0
        out["loop_cpu_ms"] = ms(loop)
        out["engine_thread_cpu_ms"] = ms(engine_proc)
        out["other_threads_cpu_ms"] = ms(sum(cpu.values()))
    return out
