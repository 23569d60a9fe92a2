"""The scheduler alone: admission, budget, priority, fair share, expiry, cancellation. No torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoglm_server.engine.builtin.scheduler import Limits, Scheduler, Ticket
from autoglm_server.errors import OverloadedError, RequestTooLargeError


def limits(**overrides: float) -> Limits:
    base: dict[str, float] = {"max_running": 2, "max_waiting": 8, "token_budget": 1000, "max_queue_time_s": 30.0}
    base.update(overrides)
    return Limits(**base)  # type: ignore[arg-type]


def ticket(
    rid: str,
    *,
    tenant: str = "t",
    priority: int = 0,
    tokens: int = 10,
    arrival: float = 0.0,
    deadline: float | None = None,
) -> Ticket:
    return Ticket(
        rid, tenant, priority, prompt_tokens=tokens // 2, reserved_tokens=tokens, arrival=arrival, deadline=deadline
    )


def admitted(s: Scheduler, now: float = 1.0) -> list[str]:
    return [t.request_id for t in s.schedule(now).admitted]


def test_the_scheduler_does_not_import_torch() -> None:
    code = "import sys, autoglm_server.engine.builtin.scheduler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_admits_up_to_max_running_in_arrival_order() -> None:
    s = Scheduler(limits())
    for i in range(4):
        s.add(ticket(f"r{i}"))
    assert admitted(s) == ["r0", "r1"]
    assert (s.running, s.waiting, s.reserved_tokens) == (2, 2, 20)
    assert admitted(s) == []
    s.finish("r0")
    assert admitted(s) == ["r2"]


def test_queue_full_is_overloaded_with_a_retry_estimate() -> None:
    s = Scheduler(limits(max_waiting=1))
    for i in range(3):  # two free rows plus one waiting place
        s.add(ticket(f"r{i}"))
    with pytest.raises(OverloadedError) as caught:
        s.add(ticket("r3"))
    assert caught.value.reason == "queue_full"
    assert caught.value.retry_after_s > 0
    assert "--max-waiting" in caught.value.message


def test_a_request_larger_than_the_budget_is_too_large() -> None:
    s = Scheduler(limits(token_budget=100))
    with pytest.raises(RequestTooLargeError) as caught:
        s.add(ticket("big", tokens=101))
    assert "100" in caught.value.message
    assert "--max-batch-tokens" in caught.value.message


def test_token_budget_bounds_what_runs() -> None:
    s = Scheduler(limits(max_running=10, token_budget=100))
    for i in range(3):
        s.add(ticket(f"r{i}", tokens=40))
    assert admitted(s) == ["r0", "r1"]
    assert s.reserved_tokens == 80
    s.finish("r1")
    assert admitted(s) == ["r2"]
    assert s.reserved_tokens == 80


def test_higher_priority_is_admitted_first() -> None:
    s = Scheduler(limits(max_running=1))
    s.add(ticket("low"))
    s.add(ticket("high", priority=5))
    assert admitted(s) == ["high"]
    s.finish("high")
    assert admitted(s) == ["low"]


def test_a_lower_priority_does_not_take_budget_a_higher_one_waits_for() -> None:
    s = Scheduler(limits(max_running=10, token_budget=100))
    s.add(ticket("running", tokens=60))
    assert admitted(s) == ["running"]
    s.add(ticket("high", priority=1, tokens=50))
    s.add(ticket("low", tokens=10))
    assert admitted(s) == []


def test_a_flooding_tenant_does_not_hold_another_behind_its_backlog() -> None:
    s = Scheduler(limits(max_running=2, max_waiting=100))
    for i in range(40):
        s.add(ticket(f"flood{i}", tenant="flooder"))
    s.add(ticket("quiet0", tenant="quiet"))
    s.add(ticket("quiet1", tenant="quiet"))
    order: list[str] = []
    while s.waiting:
        for rid in admitted(s):
            order.append(rid)
            s.finish(rid)
    # Round-robin: the quiet tenant's two requests are among the first four admitted, not after 40.
    assert order.index("quiet0") < 4
    assert order.index("quiet1") < 4
    assert order[:6].count("quiet0") + order[:6].count("quiet1") == 2


def test_max_running_per_tenant() -> None:
    s = Scheduler(limits(max_running=4, max_running_per_tenant=1))
    s.add(ticket("a0", tenant="a"))
    s.add(ticket("a1", tenant="a"))
    s.add(ticket("b0", tenant="b"))
    assert sorted(admitted(s)) == ["a0", "b0"]
    assert admitted(s) == []
    s.finish("a0")
    assert admitted(s) == ["a1"]


def test_max_waiting_per_tenant_rejects_with_tenant_limit() -> None:
    s = Scheduler(limits(max_running=1, max_waiting_per_tenant=2))
    s.add(ticket("a0", tenant="a"))
    s.add(ticket("a1", tenant="a"))
    with pytest.raises(OverloadedError) as caught:
        s.add(ticket("a2", tenant="a"))
    assert caught.value.reason == "tenant_limit"
    s.add(ticket("b0", tenant="b"))


def test_expired_waiting_requests_are_dropped_without_running() -> None:
    s = Scheduler(limits(max_running=1, max_queue_time_s=5.0))
    s.add(ticket("runs", arrival=0.0))
    assert admitted(s, now=0.5) == ["runs"]
    s.add(ticket("late", arrival=0.0, deadline=2.0))
    s.add(ticket("stale", arrival=0.0))
    s.add(ticket("fine", arrival=9.0))
    outcome = s.schedule(now=10.0)
    assert sorted((t.request_id, why) for t, why in outcome.expired) == [("late", "deadline"), ("stale", "queue_time")]
    assert s.waiting == 1


def test_cancel_returns_the_reservation_at_once() -> None:
    s = Scheduler(limits())
    s.add(ticket("a", tokens=30))
    s.add(ticket("b", tokens=30))
    s.add(ticket("c", tokens=30))
    assert admitted(s) == ["a", "b"]
    assert s.cancel("a") == "running"
    assert (s.running, s.reserved_tokens) == (1, 30)
    assert s.cancel("c") == "waiting"
    assert s.waiting == 0
    assert s.cancel("a") is None  # idempotent
    assert s.cancel("unknown") is None
    s.finish("a")  # a late finish of a cancelled request changes nothing
    assert s.reserved_tokens == 30


def test_prefill_cap_admits_at_least_one() -> None:
    s = Scheduler(limits(max_running=4, max_prefill_tokens=10))
    s.add(ticket("a", tokens=40))  # prompt 20
    s.add(ticket("b", tokens=4))
    assert admitted(s) == ["a"]
    assert admitted(s) == ["b"]
