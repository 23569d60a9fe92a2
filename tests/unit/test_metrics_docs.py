"""The metrics tables (README.md and docs/metrics.md) list exactly what the daemon registers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.types import EngineStats
from autoglm_server.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check() -> gpu_memory.HeadroomCheck:
    """A CUDA engine's start-up check (its gauges appear only where there is one)."""
    device = gpu_memory.DeviceMemory(index=0, total_bytes=80 << 30, free_bytes=79 << 30)
    return gpu_memory.check(device, gpu_memory.Reservation((("weights", 20 << 30),)), 0.9)


def _registered() -> set[str]:
    metrics = Metrics(model="m", version="v")
    # The engine's gauges appear once an engine is bound (they are read from it at scrape time); the
    # KV series only for an engine that reports them (vLLM), the prefix-cache ones only with the cache
    # on, the step timers only for one that has them (builtin); this one reports all.
    stats = EngineStats(
        running=0, waiting=0, reserved_tokens=0, token_budget=1, steps=0, alive=True,
        kv_cache_usage=0.5, prefix_cache_queries=10, prefix_cache_hits=4, prefix_cache_tokens=64,
        gpu_memory=(_gpu_check(),),
        kv_block_size=16, kv_num_blocks=100,
        phase_seconds={"forward": 1.0}, timed_steps=1,
    )  # fmt: skip
    metrics.bind_engine(lambda: stats)
    names = set()
    for family in metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    return names


@pytest.mark.parametrize("doc", ["README.md", "docs/metrics.md"])
def test_table_lists_every_registered_metric(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(autoglm_[a-z_]+)` \|", text, flags=re.MULTILINE))
    assert documented == {name for name in _registered() if name.startswith("autoglm_")}


def test_the_router_gauges_table_lists_every_vllm_name() -> None:
    """The `vllm:*` gauges for inference routers have their own table in docs/metrics.md."""
    text = (ROOT / "docs/metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(vllm:[a-z_]+)` \|", text, flags=re.MULTILINE))
    registered = {name for name in _registered() if not name.startswith("autoglm_")}
    assert registered == {
        "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:cache_config_info"
    }  # fmt: skip
    assert documented == registered
