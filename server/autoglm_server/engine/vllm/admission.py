"""The daemon's admission in front of vLLM's queue: limits, tenant shares and retry hints.

vLLM would queue anything it is given; the daemon refuses work it cannot start soon with
RESOURCE_EXHAUSTED and a retry estimate instead, as the built-in engine does. vLLM schedules
max_num_seqs (= --max-running) requests at once, so whatever is admitted beyond that waits in
vLLM's queue: --max-waiting bounds that part. Per tenant, the built-in engine's two limits become one
bound on the tenant's requests in flight (its running share plus its waiting share): vLLM's scheduler
has no notion of tenants, so a tenant's running rows cannot be capped separately.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from autoglm_server.errors import OverloadedError

_MIN_RETRY_S = 0.1
_MAX_RETRY_S = 60.0
_EMA_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_running: int
    max_waiting: int
    max_running_per_tenant: int = 0
    max_waiting_per_tenant: int = 0

    @property
    def per_tenant(self) -> int:
        """Most requests of one tenant in flight, 0 when no per-tenant limit is set."""
        if not (self.max_running_per_tenant or self.max_waiting_per_tenant):
            return 0
        running = self.max_running_per_tenant or self.max_running
        waiting = self.max_waiting_per_tenant or self.max_waiting
        return running + waiting


class Admission:
    """Counts the requests in flight (admitted, not yet finished or aborted) by tenant."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._by_tenant: Counter[str] = Counter()
        self._in_flight = 0
        self._service_time_s = 1.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting_estimate(self) -> int:
        """Requests beyond vLLM's batch rows: they wait in its queue."""
        return max(0, self._in_flight - self.limits.max_running)

    def retry_after_s(self) -> float:
        rounds = (self.waiting_estimate + 1) / self.limits.max_running
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, rounds * self._service_time_s))

    def admit(self, tenant: str) -> None:
        """Count a request in, or raise OverloadedError without counting it."""
        limits = self.limits
        if self._in_flight >= limits.max_running + limits.max_waiting:
            raise OverloadedError(
                f"the engine's queue is full ({limits.max_waiting} waiting requests, --max-waiting)",
                reason="queue_full",
                retry_after_s=self.retry_after_s(),
            )
        per_tenant = limits.per_tenant
        if per_tenant and self._by_tenant[tenant] >= per_tenant:
            raise OverloadedError(
                f"tenant {tenant!r} already has {per_tenant} requests in flight"
                " (--max-running-per-tenant plus --max-waiting-per-tenant)",
                reason="tenant_limit",
                retry_after_s=self.retry_after_s(),
            )
        self._by_tenant[tenant] += 1
        self._in_flight += 1

    def release(self, tenant: str, service_time_s: float | None = None) -> None:
        """Count a request out (once per admitted request); a finished one updates the estimate."""
        self._in_flight -= 1
        self._by_tenant[tenant] -= 1
        if self._by_tenant[tenant] <= 0:
            del self._by_tenant[tenant]
        if service_time_s is not None:
            self._service_time_s += _EMA_WEIGHT * (service_time_s - self._service_time_s)
