"""Prometheus metrics of one daemon, on their own registry, every series labelled model and version.

The registry is not the process-wide default: tests start several daemons in one process, and a
second registration of the same name would fail. Labels are bound once here, so the hot path is
an `observe()` on a ready child (about a microsecond). Gauges that mirror the engine (running,
waiting, token budget) are read from `engine.stats()` when Prometheus scrapes, so they cost
nothing per request. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from autoglm_server import __version__
from autoglm_server.admin_http import Response, Route
from autoglm_server.engine.types import EngineStats
from autoglm_server.observability.router_gauges import router_families

logger = logging.getLogger(__name__)

# From a GPU's few milliseconds to a CPU toy's seconds.
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# Reasons are label values: a bounded set, anything else counts as "other".
REJECTION_REASONS = frozenset(
    {
        "queue_full",
        "tenant_limit",
        "too_long",
        "deadline",
        "queue_time",
        "invalid",
        "unavailable",
        "out_of_memory",
        "decode_busy",
        "internal",
    }
)
# The servicer falls back to the status code's name when an error has no reason of its own.
_REASON_ALIASES = {"invalid_argument": "invalid", "deadline_exceeded": "deadline", "draining": "unavailable"}
AUTH_FAILURE_REASONS = frozenset(
    {"missing", "malformed", "too_large", "unknown_kid", "bad_signature", "expired", "not_yet_valid",
     "bad_issuer", "bad_audience", "missing_claim", "scope", "keys_unavailable"}
)  # fmt: skip

EngineStatsSource = Callable[[], EngineStats]


def _bounded(reason: str, allowed: frozenset[str]) -> str:
    return reason if reason in allowed else "other"


PROTOCOLS = ("grpc", "http")


class RequestSeries:
    """The per-request series of one front door, their labels bound once."""

    def __init__(
        self, families: Mapping[str, Histogram | Counter], rejections: Counter, labels: dict[str, str]
    ) -> None:
        self.ttft: Histogram = families["ttft"].labels(**labels)  # type: ignore[assignment]
        self.itl: Histogram = families["itl"].labels(**labels)  # type: ignore[assignment]
        self.duration: Histogram = families["duration"].labels(**labels)  # type: ignore[assignment]
        self.queue_time: Histogram = families["queue_time"].labels(**labels)  # type: ignore[assignment]
        self.prompt_tokens: Counter = families["prompt_tokens"].labels(**labels)  # type: ignore[assignment]
        self.generated_tokens: Counter = families["generated_tokens"].labels(**labels)  # type: ignore[assignment]
        self._rejections = rejections
        self._labels = labels

    def rejected(self, reason: str) -> None:
        self._rejections.labels(
            **self._labels, reason=_bounded(_REASON_ALIASES.get(reason, reason), REJECTION_REASONS)
        ).inc()


class Metrics:
    """The daemon's metrics; create one per daemon, pass it to whoever records."""

    def __init__(
        self, *, model: str, version: str, revision: str = "", server_version: str = __version__, served_model: str = ""
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model = model
        self.version = version or "unset"
        labels = {"model": model, "version": self.version}
        names = list(labels)
        reg = self.registry

        # Per-request series carry the front door too: protocol="grpc" or "http".
        request_names = [*names, "protocol"]
        self._requests = Counter(
            "autoglm_requests",
            "calls finished, by front door, method (gRPC method or HTTP route) and status code (gRPC code names)",
            [*request_names, "method", "code"],
            registry=reg,
        )
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        families: dict[str, Histogram | Counter] = {
            "ttft": Histogram(
                "autoglm_time_to_first_token_seconds", "arrival to first token sent", request_names,
                registry=reg, buckets=TTFT_BUCKETS,
            ),
            "itl": Histogram(
                "autoglm_inter_token_latency_seconds", "time between successive tokens sent", request_names,
                registry=reg, buckets=ITL_BUCKETS,
            ),
            "duration": Histogram(
                "autoglm_request_duration_seconds", "arrival to last message sent", request_names,
                registry=reg, buckets=DURATION_BUCKETS,
            ),
            "queue_time": Histogram(
                "autoglm_queue_time_seconds", "time waiting before the first forward pass", request_names,
                registry=reg, buckets=QUEUE_BUCKETS,
            ),
            "prompt_tokens": Counter(
                "autoglm_prompt_tokens", "prompt tokens of admitted requests", request_names, registry=reg
            ),
            "generated_tokens": Counter(
                "autoglm_generated_tokens", "tokens generated and sent", request_names, registry=reg
            ),
        }  # fmt: skip
        self._rejections = Counter(
            "autoglm_rejections", "requests refused or failed, by reason", [*request_names, "reason"], registry=reg
        )
        self._series = {
            protocol: RequestSeries(families, self._rejections, {**labels, "protocol": protocol})
            for protocol in PROTOCOLS
        }
        self.batch_size = Histogram(
            "autoglm_batch_size", "requests in each engine forward step", names, registry=reg, buckets=BATCH_BUCKETS
        ).labels(**labels)
        self._auth_failures = Counter(
            "autoglm_auth_failures", "calls refused by authentication, by reason", [*request_names, "reason"],
            registry=reg,
        )  # fmt: skip
        self._key_last_refresh = Gauge(
            "autoglm_key_last_refresh_timestamp_seconds",
            "Unix time of the last successful refresh of the verification keys",
            names,
            registry=reg,
        ).labels(**labels)
        self._key_created: float | None = None
        Gauge(
            "autoglm_key_age_seconds",
            "seconds since the JWT verification keys were last fetched (their staleness)",
            names,
            registry=reg,
        ).labels(**labels).set_function(self._key_age)
        Gauge(
            "autoglm_build_info",
            "always 1; the labels say what runs",
            [*names, "revision", "server_version"],
            registry=reg,
        ).labels(**labels, revision=revision or "unset", server_version=server_version).set(1)
        # The router's gauges are labelled with the name clients send (vLLM's model_name), not --model.
        self._engine = _EngineCollector(labels, served_model or model)
        reg.register(self._engine)
        load = Gauge(
            "autoglm_model_load_seconds",
            "seconds the model took at start-up, by phase: fetch (an s3:// source into the cache), engine",
            [*names, "phase"],
            registry=reg,
        )
        self._load_seconds = {phase: load.labels(**labels, phase=phase) for phase in ("fetch", "engine")}
        self._model_bytes = Gauge(
            "autoglm_model_size_bytes", "bytes of the model source's files (s3:// sources; 0 otherwise)", names,
            registry=reg,
        ).labels(**labels)  # fmt: skip
        self._fetched_bytes = Gauge(
            "autoglm_model_fetched_bytes", "bytes downloaded from object storage at this start (0 on a cache hit)",
            names, registry=reg,
        ).labels(**labels)  # fmt: skip
        self._cache_hit = Gauge(
            "autoglm_model_cache_hit", "1 when an s3:// model came from a verified cache snapshot, else 0", names,
            registry=reg,
        ).labels(**labels)  # fmt: skip

    def model_fetched(self, *, seconds: float, size_bytes: int, fetched_bytes: int, cache_hit: bool) -> None:
        """What resolving the model source cost (model_source/resolve.py), once at start-up."""
        self._load_seconds["fetch"].set(seconds)
        self._model_bytes.set(size_bytes)
        self._fetched_bytes.set(fetched_bytes)
        self._cache_hit.set(1 if cache_hit else 0)

    def engine_loaded(self, seconds: float) -> None:
        self._load_seconds["engine"].set(seconds)

    # Recording, called on the request path.
    def for_protocol(self, protocol: str) -> RequestSeries:
        """The per-request series of one front door (grpc or http)."""
        return self._series[protocol]

    def rpc_finished(self, method: str, code: grpc.StatusCode, protocol: str = "grpc") -> None:
        key = (protocol, method, code.name)
        child = self._request_children.get(key)
        if child is None:
            child = self._requests.labels(
                model=self.model, version=self.version, protocol=protocol, method=method, code=code.name
            )
            self._request_children[key] = child
        child.inc()

    def rejected(self, reason: str, protocol: str = "grpc") -> None:
        self._series[protocol].rejected(reason)

    def auth_failure(self, reason: str, protocol: str = "grpc") -> None:
        """Called by the auth layer of either front door for each refused call."""
        self._auth_failures.labels(
            model=self.model, version=self.version, protocol=protocol, reason=_bounded(reason, AUTH_FAILURE_REASONS)
        ).inc()

    def observe_batch_size(self, size: int) -> None:
        """Called by the engine after each forward step (a plain callable: no prometheus there)."""
        self.batch_size.observe(size)

    # Key source hooks (auth).
    def key_refreshed(self, newest_key_created_at: float | None, at: float | None = None) -> None:
        """A key refresh succeeded; `newest_key_created_at` is the Unix time of the newest key."""
        self._key_last_refresh.set(time.time() if at is None else at)
        if newest_key_created_at is not None:
            self._key_created = newest_key_created_at

    def _key_age(self) -> float:
        return time.time() - self._key_created if self._key_created is not None else 0.0

    # The engine's gauges.
    def bind_engine(self, stats: EngineStatsSource) -> None:
        """Read running/waiting/budget from `stats()` at every scrape."""
        self._engine.source = stats

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """Gauges read from the engine's stats when Prometheus scrapes."""

    def __init__(self, labels: Mapping[str, str], model_name: str) -> None:
        self._labels = dict(labels)
        self._model_name = model_name
        self.source: EngineStatsSource | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unknown until bound; describing nothing skips the duplicate check

    def collect(self) -> Iterator[Metric]:
        if self.source is None:
            return
        try:
            stats = self.source()
        except Exception:
            logger.exception("engine stats for /metrics failed")
            return
        keys, values = list(self._labels), list(self._labels.values())
        for name, doc, value in (
            ("autoglm_requests_running", "requests in the running batch", stats.running),
            ("autoglm_requests_waiting", "requests admitted and waiting for a batch slot", stats.waiting),
            ("autoglm_token_budget_used", "KV token budget reserved by admitted requests", stats.reserved_tokens),
            ("autoglm_token_budget_total", "KV token budget of the engine", stats.token_budget),
            ("autoglm_engine_alive", "1 while the engine loop runs", int(stats.alive)),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=keys)
            gauge.add_metric(values, value)
            yield gauge
        # The same snapshot under vLLM's names, for inference routers (observability/router_gauges.py).
        yield from router_families(stats, self._model_name)
        steps = CounterMetricFamily("autoglm_engine_steps", "engine forward steps", labels=keys)
        steps.add_metric(values, stats.steps)
        yield steps
        # Only engines with a paged KV cache (vLLM) report its use; both report their prefix cache when it is on.
        if stats.kv_cache_usage is not None:
            usage = GaugeMetricFamily(
                "autoglm_kv_cache_usage_ratio", "share of the paged KV cache in use (0 to 1)", labels=keys
            )
            usage.add_metric(values, stats.kv_cache_usage)
            yield usage
        yield from _gpu_memory_gauges(keys, values, stats)
        for name, doc, count in (
            ("autoglm_prefix_cache_queries", "prompt tokens looked up in the prefix cache", stats.prefix_cache_queries),
            ("autoglm_prefix_cache_hits", "prompt tokens found in the prefix cache", stats.prefix_cache_hits),
        ):
            if count is not None:
                counter = CounterMetricFamily(name, doc, labels=keys)
                counter.add_metric(values, count)
                yield counter
        if stats.prefix_cache_tokens is not None:
            held = GaugeMetricFamily(
                "autoglm_prefix_cache_tokens",
                "built-in engine: tokens of KV its prefix cache holds (evictable; counted in the KV budget)",
                labels=keys,
            )
            held.add_metric(values, stats.prefix_cache_tokens)
            yield held
        # Only the built-in engine times its steps (engine/builtin/timers.py).
        if stats.phase_seconds is not None:
            phases = CounterMetricFamily(
                "autoglm_engine_phase_seconds",
                "built-in engine: seconds spent per phase of its steps (forward, schedule, sample, output,"
                " handoff; deliver on the event loop; cpu and forward_cpu are the engine thread's CPU time)",
                labels=[*keys, "phase"],
            )
            for phase, seconds in stats.phase_seconds.items():
                phases.add_metric([*values, phase], seconds)
            yield phases
        if stats.timed_steps is not None:
            timed = CounterMetricFamily(
                "autoglm_engine_timed_steps", "built-in engine: steps covered by the phase timers", labels=keys
            )
            timed.add_metric(values, stats.timed_steps)
            yield timed


def _gpu_memory_gauges(keys: list[str], values: list[str], stats: EngineStats) -> Iterator[Metric]:
    """The start-up memory check of each GPU (CUDA only), so that a cluster without DCGM sees the headroom."""
    if not stats.gpu_memory:
        return
    families = (
        ("autoglm_gpu_memory_total_bytes", "GPU memory in total"),
        ("autoglm_gpu_memory_free_at_start_bytes", "GPU memory free before the engine loaded"),
        ("autoglm_gpu_memory_reserved_bytes", "GPU memory the engine reserved at start (built-in: weights,"
         " workspace and KV budget; vLLM: its --gpu-memory-fraction)"),
        ("autoglm_gpu_memory_headroom_bytes", "GPU memory left at start between the reservation and the tighter"
         " of free memory and --gpu-memory-fraction"),
    )  # fmt: skip
    gauges = [GaugeMetricFamily(name, doc, labels=[*keys, "gpu"]) for name, doc in families]
    for check in stats.gpu_memory:
        readings = (check.device.total_bytes, check.device.free_bytes, check.reservation.bytes, check.headroom_bytes)
        for gauge, reading in zip(gauges, readings, strict=True):
            gauge.add_metric([*values, str(check.device.index)], reading)
    yield from gauges


def metrics_route(metrics: Metrics) -> Route:
    """The admin server's /metrics route (names.METRICS_PATH); the HTTP front door serves the same body."""

    def route(_headers: Mapping[str, str]) -> Response:
        return Response(200, metrics.render(), CONTENT_TYPE_LATEST)

    return route
