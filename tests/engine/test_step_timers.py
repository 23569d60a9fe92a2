"""The engine's step timers (engine/builtin/timers.py), the loop waker, and the bench's per-step figures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from autoglm_server.bench import report, step_timers
from autoglm_server.engine.builtin.timers import PHASES
from autoglm_server.engine.builtin.waker import LoopWaker
from autoglm_server.engine.types import FinishReason
from autoglm_server.observability.metrics import Metrics
from tests.engine.conftest import collect, request


async def test_every_step_is_timed_and_the_phases_add_up(make_engine: Any) -> None:
    engine = await make_engine()
    before = engine.stats()
    tokens, _, last = await collect(await engine.submit(request("r", [1, 2, 3], 6, ignore_eos=True)))
    assert len(tokens) == 6
    assert last.finish_reason is FinishReason.LENGTH
    after = engine.stats()
    assert after.phase_seconds is not None
    assert before.phase_seconds is not None
    assert after.timed_steps is not None
    assert before.timed_steps is not None
    # One prefill and five decode steps, each timed once (the idle waits between are not steps).
    assert after.timed_steps - before.timed_steps == 6
    spent = {k: after.phase_seconds[k] - before.phase_seconds[k] for k in after.phase_seconds}
    assert set(PHASES) | {"deliver", "cpu", "forward_cpu"} == set(spent)
    assert all(seconds >= 0.0 for seconds in spent.values())
    assert spent["forward"] > 0.0
    assert spent["deliver"] > 0.0  # the loop delivered the deltas
    assert 0.0 < spent["forward_cpu"] <= spent["cpu"]


async def test_metrics_export_the_phases_per_engine(make_engine: Any) -> None:
    engine = await make_engine()
    await collect(await engine.submit(request("r", [1, 2], 3, ignore_eos=True)))
    metrics = Metrics(model="m", version="v")
    metrics.bind_engine(engine.stats)
    text = metrics.render().decode()
    assert 'autoglm_engine_phase_seconds_total{model="m",phase="forward",version="v"}' in text
    assert 'autoglm_engine_timed_steps_total{model="m",version="v"} 3.0' in text


async def test_the_waker_runs_the_callback_on_the_loop_once_per_wake() -> None:
    loop = asyncio.get_running_loop()
    ran: list[bool] = []
    woken = asyncio.Event()

    def callback() -> None:
        ran.append(threading.current_thread() is threading.main_thread())
        woken.set()

    waker = LoopWaker(loop, callback)
    for _ in range(3):
        woken.clear()
        await asyncio.to_thread(waker.wake)  # from another thread, as the engine thread does
        await asyncio.wait_for(woken.wait(), 10)
    waker.wake()  # left pending: close must still stop the thread
    waker.close()
    assert ran[:3] == [True, True, True]
    assert not waker._thread.is_alive()


def test_per_step_divides_the_differences_by_the_steps() -> None:
    before = step_timers.Snapshot(phases=dict.fromkeys([*PHASES, "deliver", "cpu", "forward_cpu"], 1.0), steps=10)
    after = step_timers.Snapshot(
        phases={"schedule": 1.1, "forward": 3.0, "sample": 1.2, "output": 1.3, "handoff": 1.4, "deliver": 1.5,
                "cpu": 3.0, "forward_cpu": 2.5},
        steps=110,
    )  # fmt: skip
    figures = step_timers.per_step(before, after, pid=0)
    assert figures["steps"] == 100
    assert figures["forward_ms"] == 20.0
    assert figures["non_forward_ms"] == 10.0  # 0.1 + 0.2 + 0.3 + 0.4 s over 100 steps
    assert figures["step_ms"] == 30.0
    assert figures["deliver_ms"] == 5.0
    assert step_timers.per_step(after, after, pid=0) == {}  # no step taken: nothing to report


def test_thread_cpu_reads_this_process() -> None:
    import os

    threads = step_timers.thread_cpu(os.getpid())
    assert threading.get_native_id() in threads
    assert all(seconds >= 0.0 for seconds in threads.values())


def test_report_shows_the_per_step_table_when_the_runs_have_it() -> None:
    figures = {"steps": 64, "step_ms": 10.0, "forward_ms": 9.0, "non_forward_ms": 1.0}
    rounds = [figures, {**figures, "non_forward_ms": 3.0}, {**figures, "non_forward_ms": 2.0}]
    assert report.median_per_step(rounds)["non_forward_ms"] == 2.0
    stats = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5}
    run = {"concurrency": 32, "tokens_per_s": 1.0, "ttft_ms": stats, "itl_ms": stats, "per_step": figures}
    lines = report.per_step_markdown({"daemon": [run], "mixed": {**run, "per_step": {}}})
    assert any(line.startswith("| daemon at 32 | 64 | 10.000 | 9.000 | 1.000 |") for line in lines)
    assert not any(line.startswith("| mixed") for line in lines)
    assert report.per_step_markdown({"daemon": [{**run, "per_step": {}}], "mixed": {"per_step": {}}}) == []
