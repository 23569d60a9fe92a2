"""Read a daemon's /metrics the way an inference router's metrics extractor does.

The llm-d router (the Gateway API Inference Extension's endpoint picker) parses the Prometheus text,
reads only series whose family has a `# TYPE` of gauge or counter (an untyped series reads as 0), and
takes the first series when several match. `read_router_gauges` applies the same rules, and refuses
what the router would misread: a missing TYPE line, a second series, a KV value outside [0, 1].
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
CACHE_CONFIG = "vllm:cache_config_info"
ROUTER_GAUGES = (WAITING, RUNNING, KV_USAGE)


class RouterGaugeError(AssertionError):
    """The body is not what the router can read."""


@dataclass(frozen=True)
class RouterGauges:
    """The router's view of one pod at one scrape."""

    waiting: float
    running: float
    kv_usage: float
    cache_config: dict[str, str] | None  # block_size, num_gpu_blocks (and model_name) when served
    model_name: str
    scrape_s: float  # how long the GET took


def fetch(url: str, timeout: float = 5.0) -> tuple[str, float]:
    """GET url; the body and the seconds it took."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read().decode("utf-8")
    return body, time.perf_counter() - started


def parse_router_gauges(text: str, scrape_s: float = 0.0) -> RouterGauges:
    """The router's three gauges (and the cache info) from a /metrics body, checked as the router reads them."""
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind.strip()
    values: dict[str, float] = {}
    model_names: set[str] = set()
    cache: dict[str, str] | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (*ROUTER_GAUGES, CACHE_CONFIG):
            continue
        if len(family.samples) != 1:
            raise RouterGaugeError(f"{family.name}: {len(family.samples)} series; the router reads only the first")
        sample = family.samples[0]
        model_names.add(sample.labels.get("model_name", ""))
        if family.name == CACHE_CONFIG:
            cache = dict(sample.labels)
        else:
            values[family.name] = float(sample.value)
    for name in ROUTER_GAUGES:
        if types.get(name) != "gauge":
            raise RouterGaugeError(f"{name}: TYPE {types.get(name)!r}, not gauge (an untyped series reads as 0)")
        if name not in values:
            raise RouterGaugeError(f"{name}: no series")
    if cache is not None and types.get(CACHE_CONFIG) != "gauge":
        raise RouterGaugeError(f"{CACHE_CONFIG}: TYPE {types.get(CACHE_CONFIG)!r}, not gauge")
    if not 0.0 <= values[KV_USAGE] <= 1.0:
        raise RouterGaugeError(f"{KV_USAGE} = {values[KV_USAGE]}: not a fraction in [0, 1]")
    if len(model_names) != 1 or "" in model_names:
        raise RouterGaugeError(f"model_name labels {sorted(model_names)}: want one, the same on every gauge")
    return RouterGauges(
        waiting=values[WAITING],
        running=values[RUNNING],
        kv_usage=values[KV_USAGE],
        cache_config=cache,
        model_name=model_names.pop(),
        scrape_s=scrape_s,
    )


def read_router_gauges(base_url: str, timeout: float = 5.0) -> RouterGauges:
    """GET {base_url}/metrics (a daemon's HTTP port or admin port) and read the router's gauges."""
    body, took = fetch(f"{base_url.rstrip('/')}/metrics", timeout)
    return parse_router_gauges(body, took)
