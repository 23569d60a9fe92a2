"""The gauges an inference router reads, under the names vLLM gives them.

The Gateway API Inference Extension's endpoint picker (the llm-d router) scrapes every pod's
/metrics on the pool's target port every 50 ms and scores pods by queue, running batch and KV-cache
use. Its default metric names are vLLM's; serving them under those names lets an operator put this
daemon in a pool beside vLLM pods with no change to the router. Each mirrors one of our own series,
which stay (docs/metrics.md has the table):

| router name                  | ours                                                           |
| ---------------------------- | -------------------------------------------------------------- |
| vllm:num_requests_waiting    | autoglm_requests_waiting                                       |
| vllm:num_requests_running    | autoglm_requests_running                                       |
| vllm:kv_cache_usage_perc     | autoglm_kv_cache_usage_ratio (vLLM engine); built-in engine:   |
|                              | autoglm_token_budget_used / autoglm_token_budget_total         |
| vllm:cache_config_info       | (none: the engine's block size and count, vLLM engine only)    |

The router's parser reads only series with a `# TYPE` gauge (or counter) line and, when several
series match, the first one: each family here has exactly one series, labelled `model_name` as
vLLM labels it (autoscalers filter on it). The KV value is a fraction in [0, 1] despite "perc".
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from autoglm_server.engine.types import EngineStats

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
CACHE_CONFIG = "vllm:cache_config_info"
MODEL_LABEL = "model_name"


def kv_fraction(stats: EngineStats) -> float:
    """The KV cache in use as a fraction: the engine's own figure, else the token budget reserved."""
    if stats.kv_cache_usage is not None:
        value = stats.kv_cache_usage
    elif stats.token_budget > 0:
        value = stats.reserved_tokens / stats.token_budget
    else:
        value = 0.0
    return min(max(value, 0.0), 1.0)


def router_families(stats: EngineStats, model_name: str) -> Iterator[Metric]:
    """One gauge family per router signal, each with one series, from one stats snapshot."""
    labels = [MODEL_LABEL]
    for name, doc, value in (
        (WAITING, "requests waiting for a batch slot (mirrors autoglm_requests_waiting)", float(stats.waiting)),
        (RUNNING, "requests in the running batch (mirrors autoglm_requests_running)", float(stats.running)),
        (KV_USAGE, "KV cache in use, a fraction from 0 to 1 (see docs/metrics.md)", kv_fraction(stats)),
    ):
        gauge = GaugeMetricFamily(name, doc, labels=labels)
        gauge.add_metric([model_name], value)
        yield gauge
    if stats.kv_block_size is not None and stats.kv_num_blocks is not None:
        # Info-style: the value is ignored, the labels carry the KV cache's geometry.
        info = GaugeMetricFamily(
            CACHE_CONFIG,
            "KV cache geometry: tokens per block and blocks on the device (value always 1)",
            labels=[MODEL_LABEL, "block_size", "num_gpu_blocks"],
        )
        info.add_metric([model_name, str(stats.kv_block_size), str(stats.kv_num_blocks)], 1.0)
        yield info
