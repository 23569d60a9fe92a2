"""The metric names the daemon really exports, read from its own registry.

A Metrics object is built as the daemon builds it and bound to engine stats with every field set, so
gauges an engine reports only when it has them (the vLLM KV cache, say) are included too. Names come from
each family's type, as the text exposition writes them (a counter `x` is exposed as `x_total` and
`x_created`), plus every sample actually rendered.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.types import EngineStats
from autoglm_server.observability.metrics import Metrics

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
}


def _sample_value(field: dataclasses.Field[Any]) -> object:
    kind = str(field.type)
    if "Mapping" in kind:  # the step timers: seconds per phase
        return {"forward": 0.5, "schedule": 0.5}
    if "bool" in kind:
        return True
    if "float" in kind:
        return 0.5
    return 1


def _gpu_check() -> gpu_memory.HeadroomCheck:
    device = gpu_memory.DeviceMemory(index=0, total_bytes=80 << 30, free_bytes=79 << 30)
    return gpu_memory.check(device, gpu_memory.Reservation((("weights", 20 << 30),)), 0.9)


def full_stats() -> EngineStats:
    """Every field set; a CUDA engine's start-up GPU memory check included (its gauges exist only then)."""
    values = {f.name: _sample_value(f) for f in dataclasses.fields(EngineStats) if f.name != "gpu_memory"}
    return EngineStats(**values, gpu_memory=(_gpu_check(),))


def exported_metric_names() -> set[str]:
    metrics = Metrics(model="m", version="v")
    metrics.bind_engine(full_stats)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names
