"""The daemon's Prometheus recording rules and alerts, defined once.

generate.py renders them into prometheusrule.yaml (what an operator applies) with the production
Tuning; tests/monitoring renders the very same rules with a short Tuning (seconds instead of minutes) for
the end-to-end test against a real Prometheus. Only the numbers differ, never the expressions' shape.

Every aggregation names the labels it keeps (`sum by (...)`), so a label added to a series later (for
example `protocol`) neither breaks a rule nor splits an alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Status codes that are the server's fault, on both front doors: gRPC names, and HTTP 5xx should the HTTP
# API report HTTP codes. Client mistakes (INVALID_ARGUMENT, 4xx), admission (RESOURCE_EXHAUSTED, 429: see
# the rejection alert) and authentication (UNAUTHENTICATED, PERMISSION_DENIED: see the auth alert) are not.
SERVER_ERROR_CODES = "UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED|UNIMPLEMENTED|5[0-9][0-9]"
# Rejections that mean "not enough capacity" (autoglm_rejections_total reasons).
CAPACITY_REASONS = "queue_full|tenant_limit|queue_time|out_of_memory"
# The daemon's pods, as kube-state-metrics names them (Deployments autoglm-server-stable / -canary).
POD_PATTERN = "autoglm-server-.+"
BY_VERSION = "namespace, model, version"
BY_POD = "namespace, pod, model, version"
RUNBOOK = "mesh/README.md#runbooks"


@dataclass(frozen=True)
class Tuning:
    """The numbers of the rules: windows, pending periods and thresholds."""

    window: str = "5m"  # rate and average windows
    for_override: str | None = None  # when set, every alert's `for` (the tests' short windows)
    ttft_p99_slo_s: float = 5.0
    itl_p99_slo_s: float = 0.1
    error_ratio: float = 0.02
    rejection_ratio: float = 0.05
    waiting_per_pod: float = 8.0  # twice the HPA's target of 4 waiting per pod
    token_budget_ratio: float = 0.95
    kv_usage_ratio: float = 0.95
    unready_share: float = 0.25
    auth_failures_per_s: float = 1.0
    key_stale_s: float = 900.0  # 15 missed refreshes; pods turn unready at 3600 s (key_max_staleness)
    canary_ttft_factor: float = 1.5
    canary_ttft_floor_s: float = 0.25
    canary_error_margin: float = 0.01


PRODUCTION = Tuning()
# tests/monitoring's end-to-end run against a real Prometheus: seconds instead of minutes, and a queue of
# one waiting request counts as saturated (the test's daemon admits two).
END_TO_END = Tuning(window="10s", for_override="2s", waiting_per_pod=1.0)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str


def recorded(t: Tuning) -> dict[str, str]:
    """Recording rule name -> expression."""
    w = t.window
    q = {
        f"autoglm:time_to_first_token_seconds:p{int(p * 100)}_rate{w}": (
            f"histogram_quantile({p}, sum by ({BY_VERSION}, le)"
            f" (rate(autoglm_time_to_first_token_seconds_bucket[{w}])))"
        )
        for p in (0.5, 0.95, 0.99)
    }
    q |= {
        f"autoglm:inter_token_latency_seconds:p{int(p * 100)}_rate{w}": (
            f"histogram_quantile({p}, sum by ({BY_VERSION}, le)"
            f" (rate(autoglm_inter_token_latency_seconds_bucket[{w}])))"
        )
        for p in (0.5, 0.95, 0.99)
    }
    q[f"autoglm:requests:rate{w}"] = f"sum by ({BY_VERSION}) (rate(autoglm_requests_total[{w}]))"
    # A version without a single error has no error series at all: `or 0 * ...` makes its ratio 0, not absent,
    # so the canary can still be compared with a faultless stable.
    q[f"autoglm:request_errors:ratio_rate{w}"] = (
        f'(sum by ({BY_VERSION}) (rate(autoglm_requests_total{{code=~"{SERVER_ERROR_CODES}"}}[{w}]))'
        f" or 0 * sum by ({BY_VERSION}) (rate(autoglm_requests_total[{w}])))"
        f" / sum by ({BY_VERSION}) (rate(autoglm_requests_total[{w}]))"
    )
    q["autoglm:token_budget:usage_ratio"] = (
        f"sum by ({BY_POD}) (autoglm_token_budget_used) / sum by ({BY_POD}) (autoglm_token_budget_total)"
    )
    return q


def alerts(t: Tuning) -> list[Alert]:
    w = t.window
    ttft = f"autoglm:time_to_first_token_seconds:p95_rate{w}"
    errors = f"autoglm:request_errors:ratio_rate{w}"
    ready = f'kube_pod_status_ready{{condition="true", pod=~"{POD_PATTERN}"}}'
    return [
        Alert(
            "AutoglmEngineNotAlive",
            f"max by ({BY_POD}) (autoglm_engine_alive) == 0",
            "1m",
            "critical",
            "The engine loop of {{ $labels.pod }} is not running",
        ),
        Alert(
            "AutoglmReadinessLost",
            f"1 - sum by (namespace) ({ready}) / count by (namespace) ({ready}) > {t.unready_share}",
            "10m",
            "critical",
            "{{ $value | humanizePercentage }} of the autoglm-server pods in {{ $labels.namespace }} are not ready",
        ),
        Alert(
            "AutoglmTimeToFirstTokenP99High",
            f"autoglm:time_to_first_token_seconds:p99_rate{w} > {t.ttft_p99_slo_s}",
            "10m",
            "warning",
            "p99 time to first token of {{ $labels.model }} {{ $labels.version }} is {{ $value | humanizeDuration }}"
            f" (SLO {t.ttft_p99_slo_s:g} s)",
        ),
        Alert(
            "AutoglmInterTokenLatencyP99High",
            f"autoglm:inter_token_latency_seconds:p99_rate{w} > {t.itl_p99_slo_s}",
            "10m",
            "warning",
            "p99 inter-token latency of {{ $labels.model }} {{ $labels.version }} is {{ $value | humanizeDuration }}"
            f" (SLO {t.itl_p99_slo_s:g} s)",
        ),
        Alert(
            "AutoglmErrorRatioHigh",
            f'sum by ({BY_VERSION}, code) (rate(autoglm_requests_total{{code=~"{SERVER_ERROR_CODES}"}}[{w}]))'
            f" / ignoring (code) group_left sum by ({BY_VERSION}) (rate(autoglm_requests_total[{w}]))"
            f" > {t.error_ratio}",
            "5m",
            "critical",
            "{{ $value | humanizePercentage }} of the calls to {{ $labels.model }} {{ $labels.version }} "
            "end in {{ $labels.code }}",
        ),
        Alert(
            "AutoglmAuthFailuresHigh",
            f"sum by ({BY_VERSION}, reason) (rate(autoglm_auth_failures_total[{w}])) > {t.auth_failures_per_s}",
            "10m",
            "warning",
            "{{ $value | humanize }} calls/s to {{ $labels.model }} {{ $labels.version }} are refused: "
            "{{ $labels.reason }}",
        ),
        Alert(
            "AutoglmSaturated",
            f"max by ({BY_POD}) (avg_over_time(autoglm_requests_waiting[{w}])) >= {t.waiting_per_pod}"
            f" or max by ({BY_POD}) (avg_over_time(autoglm_token_budget_used[{w}]))"
            f" / max by ({BY_POD}) (autoglm_token_budget_total) > {t.token_budget_ratio}"
            # vLLM's paged KV cache (reported only by engines that have one).
            f" or max by ({BY_POD}) (avg_over_time(autoglm_kv_cache_usage_ratio[{w}])) > {t.kv_usage_ratio}",
            "5m",
            "warning",
            "{{ $labels.pod }} is saturated (waiting requests, KV token budget or KV cache)",
        ),
        Alert(
            "AutoglmRejectionsHigh",
            f'sum by ({BY_VERSION}, reason) (rate(autoglm_rejections_total{{reason=~"{CAPACITY_REASONS}"}}[{w}]))'
            f" / ignoring (reason) group_left sum by ({BY_VERSION}) (rate(autoglm_requests_total[{w}]))"
            f" > {t.rejection_ratio}",
            "5m",
            "warning",
            "{{ $value | humanizePercentage }} of the calls to {{ $labels.model }} {{ $labels.version }} "
            "are rejected: {{ $labels.reason }}",
        ),
        Alert(
            "AutoglmJwtKeysStale",
            f"time() - max by ({BY_POD}) (autoglm_key_last_refresh_timestamp_seconds > 0) > {t.key_stale_s:g}"
            f' or sum by ({BY_POD}) (rate(autoglm_auth_failures_total{{reason="keys_unavailable"}}[{w}])) > 0',
            "5m",
            "critical",
            "{{ $labels.pod }} cannot refresh its JWT verification keys from Vault",
        ),
        Alert(
            "AutoglmCanaryTimeToFirstTokenWorse",
            # group_left keeps the canary's labels (version among them) for the `and` and the alert.
            f'({ttft}{{version="canary"}} > on (namespace, model) group_left'
            f' {ttft}{{version="stable"}} * {t.canary_ttft_factor})'
            f' and {ttft}{{version="canary"}} > {t.canary_ttft_floor_s}',
            "10m",
            "warning",
            "Canary p95 time to first token of {{ $labels.model }} is {{ $value | humanizeDuration }}, "
            f"over {t.canary_ttft_factor:g}x stable's",
        ),
        Alert(
            "AutoglmCanaryErrorsWorse",
            f'{errors}{{version="canary"}} > on (namespace, model) group_left'
            f' {errors}{{version="stable"}} + {t.canary_error_margin}',
            "5m",
            "critical",
            "Canary of {{ $labels.model }} fails {{ $value | humanizePercentage }} of its calls, "
            f"over stable's ratio + {t.canary_error_margin:g}",
        ),
    ]


def groups(t: Tuning = PRODUCTION) -> list[dict[str, Any]]:
    """The rule groups, as both Prometheus rule files and PrometheusRule's spec.groups hold them."""
    records = [{"record": name, "expr": expr} for name, expr in recorded(t).items()]
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": t.for_override or a.for_,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary, "runbook": f"{RUNBOOK} ({a.name})"},
        }
        for a in alerts(t)
    ]
    return [{"name": "autoglm.recording", "rules": records}, {"name": "autoglm.alerts", "rules": rules}]


def prometheus_rule(t: Tuning = PRODUCTION) -> dict[str, Any]:
    """The PrometheusRule (prometheus-operator) that carries the groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "autoglm-server",
            "namespace": "autoglm",
            # Match these to your Prometheus's ruleSelector (kube-prometheus-stack: release=<its name>).
            "labels": {"app.kubernetes.io/part-of": "autoglm-serve", "role": "alert-rules"},
        },
        "spec": {"groups": groups(t) + _gpu_groups()},
    }


def _gpu_groups() -> list[dict[str, Any]]:
    """The GPU (DCGM exporter) groups of monitoring_gpu.py, which builds on this module."""
    import monitoring_gpu

    return monitoring_gpu.groups()
