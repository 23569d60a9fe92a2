"""Everything observability gives the daemon, built once from Settings: what app.py wires in.

obs = build_observability(settings, model_id=..., revision=...)
server = grpc.aio.server(interceptors=[*obs.interceptors, auth, limits], ...)
servicer = GenerationServicer(..., observers=obs.observers)
obs.metrics.bind_engine(engine.stats); admin.add_route(names.METRICS_PATH, obs.metrics_route())
...
obs.shutdown()   # last step of the shutdown sequence: flushes the traces
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from autoglm_server import __version__
from autoglm_server.admin_http import Response, Route
from autoglm_server.observability.access_log import AccessLogInterceptor
from autoglm_server.observability.grpc_metrics import MetricsInterceptor
from autoglm_server.observability.grpc_tracing import TracingInterceptor
from autoglm_server.observability.hooks import ObserverFactory
from autoglm_server.observability.metrics import Metrics, metrics_route
from autoglm_server.observability.observer import make_observer_factory
from autoglm_server.observability.settings import ObservabilitySettings
from autoglm_server.observability.tracing import TracingRuntime, setup_tracing


@dataclass
class Observability:
    tracing: TracingRuntime
    metrics: Metrics | None
    observers: ObserverFactory
    # In this order, before auth and load shedding: tracing first so refused calls leave a span.
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)

    def metrics_route(self) -> Route:
        if self.metrics is not None:
            return metrics_route(self.metrics)
        return lambda _headers: Response(404, b"metrics are off (--no-metrics-enabled)\n", "text/plain")

    def shutdown(self) -> None:
        self.tracing.shutdown()


def build_observability(
    settings: ObservabilitySettings, *, model_id: str, model_version: str, revision: str = "", served_model: str = ""
) -> Observability:
    tracing = setup_tracing(
        settings,
        {
            "service.version": __version__,
            "gen_ai.request.model": model_id,
            "autoglm.model.version": model_version,
            "autoglm.model.revision": revision,
        },
    )
    metrics = (
        Metrics(model=model_id, version=model_version, revision=revision, served_model=served_model)
        if settings.metrics_enabled
        else None
    )
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if tracing.enabled:
        interceptors.append(TracingInterceptor(tracing.tracer, trace_health_checks=settings.trace_health_checks))
    if metrics is not None:
        interceptors.append(MetricsInterceptor(metrics))
    if settings.access_log:
        interceptors.append(AccessLogInterceptor(include_health_checks=settings.trace_health_checks))
    observers = make_observer_factory(metrics, tracing.tracer, model=model_id, log_prompts=settings.log_prompts)
    return Observability(tracing, metrics, observers, interceptors)
