"""Admission control and the order in which waiting requests get a batch row. Pure Python: no torch.

Every request reserves `prompt + max_new_tokens` tokens of KV budget while it runs, so memory is
bounded without preemption. Waiting requests are admitted by priority (higher first); among equal
priority, round-robin across tenants, so a tenant that floods the queue gets one row per turn like
everyone else instead of holding the others behind its whole backlog.

The scheduler is not thread-safe; the engine calls it under one lock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from autoglm_server.errors import OverloadedError, RequestTooLargeError

# Retry estimates are clamped to this range (seconds).
_MIN_RETRY_S = 0.1
_MAX_RETRY_S = 60.0
# Weight of the newest sample in the moving average of request service time.
_EMA_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class Limits:
    """The admission limits (see EngineSettings for their meaning)."""

    max_running: int
    max_waiting: int
    token_budget: int
    max_queue_time_s: float
    max_waiting_per_tenant: int = 0
    max_running_per_tenant: int = 0
    max_prefill_tokens: int = 1 << 30


@dataclass(slots=True)
class Ticket:
    """The scheduler's view of one request."""

    request_id: str
    tenant: str
    priority: int
    prompt_tokens: int
    reserved_tokens: int
    arrival: float
    deadline: float | None = None


@dataclass(slots=True)
class Admission:
    """The outcome of one scheduling pass."""

    admitted: list[Ticket] = field(default_factory=list)
    # Waiting requests dropped without running, with why: "deadline" or "queue_time".
    expired: list[tuple[Ticket, str]] = field(default_factory=list)


class Scheduler:
    """Waiting queues per priority and tenant, running reservations, and admission decisions."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # priority -> tenant -> FIFO of that tenant's waiting tickets
        self._queues: dict[int, dict[str, deque[Ticket]]] = {}
        # priority -> tenants with waiting work, in round-robin order (the next one first)
        self._turns: dict[int, deque[str]] = {}
        self._waiting: dict[str, Ticket] = {}
        self._running: dict[str, Ticket] = {}
        self._tenant_running: Counter[str] = Counter()
        self._tenant_waiting: Counter[str] = Counter()
        self._reserved = 0
        self._service_time_s = 1.0

    # ----------------------------------------------------------------- views
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def reserved_tokens(self) -> int:
        return self._reserved

    def is_running(self, request_id: str) -> bool:
        return request_id in self._running

    def retry_after_s(self) -> float:
        """How long until a row is likely free: the queue ahead, served max_running at a time."""
        rounds = (len(self._waiting) + 1) / self.limits.max_running
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, rounds * self._service_time_s))

    # ------------------------------------------------------------- admission
    def add(self, ticket: Ticket) -> None:
        """Queue a request or raise at once (too large: never fits; overloaded: not now)."""
        limits = self.limits
        if ticket.reserved_tokens > limits.token_budget:
            raise RequestTooLargeError(
                "max_new_tokens",
                f"prompt ({ticket.prompt_tokens}) plus max_new_tokens needs {ticket.reserved_tokens} tokens,"
                f" more than the engine's token budget of {limits.token_budget} (--max-batch-tokens)",
            )
        if ticket.request_id in self._waiting or ticket.request_id in self._running:
            raise ValueError(f"request id {ticket.request_id!r} is already in the engine")
        # Requests that will get a free row at the next step do not count as queued.
        free_rows = max(0, limits.max_running - len(self._running))
        if len(self._waiting) >= limits.max_waiting + free_rows:
            raise OverloadedError(
                f"the engine's queue is full ({limits.max_waiting} waiting requests, --max-waiting)",
                reason="queue_full",
                retry_after_s=self.retry_after_s(),
            )
        per_tenant = limits.max_waiting_per_tenant
        if per_tenant and self._tenant_waiting[ticket.tenant] >= per_tenant:
            raise OverloadedError(
                f"tenant {ticket.tenant!r} already has {per_tenant} waiting requests (--max-waiting-per-tenant)",
                reason="tenant_limit",
                retry_after_s=self.retry_after_s(),
            )
        queues = self._queues.setdefault(ticket.priority, {})
        if ticket.tenant not in queues:
            queues[ticket.tenant] = deque()
            self._turns.setdefault(ticket.priority, deque()).append(ticket.tenant)
        queues[ticket.tenant].append(ticket)
        self._waiting[ticket.request_id] = ticket
        self._tenant_waiting[ticket.tenant] += 1

    def schedule(self, now: float) -> Admission:
        """Drop expired waiting requests, then admit as many as the limits allow."""
        admission = Admission()
        for ticket in list(self._waiting.values()):
            if ticket.deadline is not None and ticket.deadline <= now:
                admission.expired.append((ticket, "deadline"))
            elif now - ticket.arrival > self.limits.max_queue_time_s:
                admission.expired.append((ticket, "queue_time"))
        for ticket, _ in admission.expired:
            self._remove_waiting(ticket)
        prefill_left = self.limits.max_prefill_tokens
        for priority in sorted(self._turns, reverse=True):
            blocked, prefill_left = self._admit_level(priority, prefill_left, admission.admitted)
            # A lower priority must not take the budget a higher one is waiting for.
            if blocked or len(self._running) >= self.limits.max_running:
                break
        return admission

    def _admit_level(self, priority: int, prefill_left: int, out: list[Ticket]) -> tuple[bool, int]:
        """Round-robin over the tenants of one priority; returns (blocked by budget, prefill left)."""
        limits = self.limits
        turns = self._turns[priority]
        queues = self._queues[priority]
        blocked = False
        passes = 0  # tenants skipped in a row; a full round without admission ends the level
        while turns and passes < len(turns) and len(self._running) < limits.max_running:
            tenant = turns[0]
            head = queues[tenant][0]
            over_tenant = bool(limits.max_running_per_tenant) and (
                self._tenant_running[tenant] >= limits.max_running_per_tenant
            )
            over_budget = self._reserved + head.reserved_tokens > limits.token_budget
            over_prefill = bool(out) and head.prompt_tokens > prefill_left
            if over_tenant or over_budget or over_prefill:
                blocked = blocked or over_budget or over_prefill
                turns.rotate(-1)
                passes += 1
                continue
            self._remove_waiting(head)
            self._start(head)
            out.append(head)
            prefill_left -= head.prompt_tokens
            passes = 0
            if tenant in turns and turns[0] == tenant:
                turns.rotate(-1)  # this tenant had its turn: the next tenant goes first
        return blocked, prefill_left

    # ----------------------------------------------------------- bookkeeping
    def _start(self, ticket: Ticket) -> None:
        self._running[ticket.request_id] = ticket
        self._tenant_running[ticket.tenant] += 1
        self._reserved += ticket.reserved_tokens

    def _remove_waiting(self, ticket: Ticket) -> None:
        del self._waiting[ticket.request_id]
        self._tenant_waiting[ticket.tenant] -= 1
        queues = self._queues[ticket.priority]
        queue = queues[ticket.tenant]
        queue.remove(ticket)
        if not queue:
            del queues[ticket.tenant]
            self._turns[ticket.priority].remove(ticket.tenant)
            if not queues:
                del self._queues[ticket.priority]
                del self._turns[ticket.priority]

    def finish(self, request_id: str, service_time_s: float | None = None) -> None:
        """A running request ended: return its row and reservation."""
        ticket = self._running.pop(request_id, None)
        if ticket is None:
            return
        self._tenant_running[ticket.tenant] -= 1
        self._reserved -= ticket.reserved_tokens
        if service_time_s is not None:
            self._service_time_s += _EMA_WEIGHT * (service_time_s - self._service_time_s)

    def cancel(self, request_id: str) -> str | None:
        """Forget a request wherever it is; returns "waiting", "running" or None (unknown/finished)."""
        ticket = self._waiting.get(request_id)
        if ticket is not None:
            self._remove_waiting(ticket)
            return "waiting"
        if request_id in self._running:
            self.finish(request_id)
            return "running"
        return None
