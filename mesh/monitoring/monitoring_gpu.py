"""GPU telemetry: recording rules, alerts and dashboard panels over NVIDIA's DCGM exporter.

Kept apart from monitoring_rules.py and monitoring_dashboard.py (own rule groups, own dashboard row) so
that the GPU part reads, tests and merges on its own. Facts about the exporter (metric names, units,
labels) come from ../shared/schemas/dcgm/METRICS.md: FB_USED/FB_FREE in MiB, GPU_UTIL in percent,
XID_ERRORS the code of the most recent XID with `err_code`/`err_msg` labels, and `pod`/`namespace`
labels only on GPUs a container holds (exporter run with --kubernetes, as its manifests do).

The exporter's `pod` and `namespace` are the pod that holds the GPU, so our pods' GPUs are selected by
the pod name and joined to the daemon's own series `on (namespace, pod)`. Labels whose spelling changed
between exporter releases (`Hostname`/`hostname`, `UUID`/`uuid`) are never used; `gpu` (the index) is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitoring_rules import POD_PATTERN, RUNBOOK, Alert

# Every GPU series of our pods (the exporter labels a GPU with the pod that holds it).
OURS = f'pod=~"{POD_PATTERN}"'
BY_GPU = "namespace, pod, gpu"
MIB = 1048576


@dataclass(frozen=True)
class GpuTuning:
    """The numbers of the GPU rules."""

    window: str = "5m"
    # vLLM holds its --gpu-memory-fraction (0.90 in overlays/gpu) from start to exit by design, so
    # memory alone near 90 % means nothing: the threshold sits above it.
    memory_ratio: float = 0.97
    busy_util_pct: float = 50.0  # busy although nothing runs or waits: a stuck kernel or engine
    idle_util_pct: float = 10.0  # idle although requests wait the whole window: a stuck engine
    for_: str = "10m"


GPU_PRODUCTION = GpuTuning()


def recorded(t: GpuTuning = GPU_PRODUCTION) -> dict[str, str]:
    used = f"sum by ({BY_GPU}) (DCGM_FI_DEV_FB_USED{{{OURS}}})"
    free = f"sum by ({BY_GPU}) (DCGM_FI_DEV_FB_FREE{{{OURS}}})"
    return {
        # FB_RESERVED (driver-reserved, not in the Helm chart's counter set) is left out of the total.
        "autoglm:gpu_memory_used:ratio": f"{used} / ({used} + {free})",
        f"autoglm:gpu_utilization:avg_over_time{t.window}": (
            f"avg_over_time(max by ({BY_GPU}) (DCGM_FI_DEV_GPU_UTIL{{{OURS}}})[{t.window}:])"
        ),
    }


def alerts(t: GpuTuning = GPU_PRODUCTION) -> list[Alert]:
    util = f"autoglm:gpu_utilization:avg_over_time{t.window}"
    # What the daemon of the same pod does, over the same window.
    running = f"sum by (namespace, pod) (max_over_time(autoglm_requests_running[{t.window}]))"
    waiting_max = f"sum by (namespace, pod) (max_over_time(autoglm_requests_waiting[{t.window}]))"
    waiting_min = f"sum by (namespace, pod) (min_over_time(autoglm_requests_waiting[{t.window}]))"
    return [
        Alert(
            "AutoglmGpuMemoryHigh",
            f"autoglm:gpu_memory_used:ratio > {t.memory_ratio}",
            t.for_,
            "warning",
            "GPU {{ $labels.gpu }} of {{ $labels.pod }} is {{ $value | humanizePercentage }} full",
        ),
        Alert(
            "AutoglmGpuXidError",
            f"max by ({BY_GPU}, err_code) (DCGM_FI_DEV_XID_ERRORS{{{OURS}}}) > 0",
            "0m",
            "critical",
            "GPU {{ $labels.gpu }} of {{ $labels.pod }} reported XID {{ $labels.err_code }}",
        ),
        Alert(
            "AutoglmGpuBusyWithoutWork",
            f"{util} > {t.busy_util_pct:g} and on (namespace, pod) ({running} + {waiting_max}) == 0",
            t.for_,
            "warning",
            "GPU {{ $labels.gpu }} of {{ $labels.pod }} is {{ $value | humanize }} % busy while the daemon "
            "has no request running or waiting",
        ),
        Alert(
            "AutoglmGpuIdleWhileQueued",
            f"{util} < {t.idle_util_pct:g} and on (namespace, pod) {waiting_min} > 0",
            t.for_,
            "critical",
            "GPU {{ $labels.gpu }} of {{ $labels.pod }} is {{ $value | humanize }} % busy while requests "
            "wait in its queue",
        ),
    ]


def groups(t: GpuTuning = GPU_PRODUCTION) -> list[dict[str, Any]]:
    """The GPU rule groups (appended to the daemon's own in the PrometheusRule)."""
    records = [{"record": name, "expr": expr} for name, expr in recorded(t).items()]
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary, "runbook": f"{RUNBOOK} ({a.name})"},
        }
        for a in alerts(t)
    ]
    return [{"name": "autoglm.gpu.recording", "rules": records}, {"name": "autoglm.gpu.alerts", "rules": rules}]
