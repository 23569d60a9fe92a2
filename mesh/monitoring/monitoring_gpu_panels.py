"""The dashboard's GPU row: DCGM exporter series of our pods' GPUs, beside the engine's KV use.

Each DCGM expression keeps `namespace, pod, gpu` and is joined `on (namespace, pod)` to the daemon's
autoglm_build_info filtered by the dashboard's namespace and model pickers: the exporter's series carry
no model label, the join supplies the filter (and keeps only GPUs our pods hold). FB_USED/FB_FREE are
MiB; the panels show bytes.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from monitoring_dashboard import SEL, _series
from monitoring_gpu import BY_GPU, MIB, OURS

GPU_SEL = f'namespace=~"$namespace", {OURS}'
JOIN = f" * on (namespace, pod) group_left max by (namespace, pod) (autoglm_build_info{{{SEL}}})"
LEGEND = "{{pod}} GPU {{gpu}}"


def _dcgm(metric: str, agg: str = "max", extra: str = "") -> str:
    by = f"{BY_GPU}, {extra}" if extra else BY_GPU
    return f"({agg} by ({by}) ({metric}{{{GPU_SEL}}}){JOIN})"


def panels() -> list[timeseries.Panel]:
    used, free = _dcgm("DCGM_FI_DEV_FB_USED", "sum"), _dcgm("DCGM_FI_DEV_FB_FREE", "sum")
    return [
        _series(
            "GPU memory used and free (DCGM)",
            "bytes",
            [(f"{used} * {MIB}", f"{LEGEND} used"), (f"{free} * {MIB}", f"{LEGEND} free")],
            "Framebuffer memory of each GPU our pods hold, from the DCGM exporter. vLLM holds its "
            "--gpu-memory-fraction from start to exit, so 'used' sits near it by design.",
        ),
        _series(
            "GPU memory used beside the engine's KV cache use",
            "percentunit",
            [
                (f"{used} / ({used} + {free})", f"{LEGEND} GPU memory"),
                (
                    f"sum by (pod) (autoglm_token_budget_used{{{SEL}}})"
                    f" / sum by (pod) (autoglm_token_budget_total{{{SEL}}})",
                    "{{pod}} KV token budget",
                ),
                (f"max by (pod) (autoglm_kv_cache_usage_ratio{{{SEL}}})", "{{pod}} vLLM KV cache"),
            ],
            "The GPU's memory against what the engine uses of its KV reservation: a full GPU with a half-used "
            "KV budget means something else holds the memory. The memory alert fires at 97 % for 10 minutes.",
        ),
        _series(
            "GPU utilization",
            "percent",
            [(_dcgm("DCGM_FI_DEV_GPU_UTIL"), LEGEND)],
            "Share of time a kernel ran. Busy with nothing running or waiting, or idle while requests wait, "
            "fires an alert (a stuck engine or kernel).",
        ),
        _series(
            "GPU temperature",
            "celsius",
            [
                (_dcgm("DCGM_FI_DEV_GPU_TEMP"), f"{LEGEND} die"),
                (_dcgm("DCGM_FI_DEV_MEMORY_TEMP"), f"{LEGEND} memory"),
            ],
            "Die and memory temperature; throttling starts in the 80s (°C) on most datacenter GPUs.",
        ),
        _series(
            "GPU power draw",
            "watt",
            [(_dcgm("DCGM_FI_DEV_POWER_USAGE"), LEGEND)],
            "Current board power.",
        ),
        _series(
            "GPU XID errors (most recent code)",
            "none",
            [(_dcgm("DCGM_FI_DEV_XID_ERRORS", extra="err_code"), f"{LEGEND} XID {{{{err_code}}}}")],
            "The code of the most recent XID error of each GPU (0: none); any other value fires AutoglmGpuXidError.",
        ),
        _series(
            "GPU memory at start (the daemon's own gauges)",
            "bytes",
            [
                (f"max by (pod, gpu) (autoglm_gpu_memory_total_bytes{{{SEL}}})", f"{LEGEND} total"),
                (f"max by (pod, gpu) (autoglm_gpu_memory_reserved_bytes{{{SEL}}})", f"{LEGEND} reserved"),
                (f"max by (pod, gpu) (autoglm_gpu_memory_headroom_bytes{{{SEL}}})", f"{LEGEND} headroom"),
            ],
            "What each pod found and reserved when it started (no DCGM needed). A pod whose reservation "
            "cannot fit refuses to start (exit code 78) and never appears here.",
        ),
    ]
