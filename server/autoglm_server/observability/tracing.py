"""OpenTelemetry tracing: a TracerProvider exporting spans over OTLP/gRPC (Jaeger takes it on 4317).

Configured by the standard OTEL_* environment variables, with `--otlp-endpoint` and
`--otlp-insecure` on top; off when no endpoint is set. The provider is never made global: the
daemon passes its tracer to whoever needs one, so several daemons (or tests) in one process do
not fight over it. Spans are batched off the event loop and flushed by `TracingRuntime.shutdown()`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from autoglm_server.observability.settings import ObservabilitySettings

logger = logging.getLogger(__name__)

TRACER_NAME = "autoglm_server"
DEFAULT_SERVICE_NAME = "autoglm-server"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(slots=True)
class TracingRuntime:
    """The daemon's tracer and, when tracing is on, the provider that must be flushed at exit."""

    tracer: trace.Tracer
    provider: TracerProvider | None = None
    endpoint: str = ""

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export the spans still queued (waiting at most `timeout_s`) and stop the exporter."""
        if self.provider is None:
            return
        if not self.provider.force_flush(int(timeout_s * 1000)):
            logger.warning("traces not flushed within %.1f s; some spans are lost", timeout_s)
        self.provider.shutdown()
        self.provider = None


def disabled_tracing() -> TracingRuntime:
    """A runtime whose tracer records nothing (it still carries an incoming trace id into logs)."""
    return TracingRuntime(tracer=trace.NoOpTracer())


def trace_endpoint(settings: ObservabilitySettings, environ: Mapping[str, str]) -> str:
    """The collector to export to: the flag, else the standard variables; empty means off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return ""
    if settings.otlp_endpoint:
        return settings.otlp_endpoint
    for name in _ENDPOINT_VARS:
        if environ.get(name):
            return environ[name]
    return ""


def build_resource(attributes: Mapping[str, str], environ: Mapping[str, str]) -> Resource:
    """Our attributes (model, version, replica) under whatever OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME set: the operator's environment wins."""
    defaults = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        "host.name": socket.gethostname(),
        **{key: value for key, value in attributes.items() if value},
    }
    return Resource.create(defaults).merge(_env_resource(environ))


def _env_resource(environ: Mapping[str, str]) -> Resource:
    """What OTEL_RESOURCE_ATTRIBUTES (percent-encoded key=value pairs) and OTEL_SERVICE_NAME say.

    The SDK's own detector reads os.environ only; this reads the mapping it is given.
    """
    attrs: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = environ["OTEL_SERVICE_NAME"]
    return Resource(attrs)


def setup_tracing(
    settings: ObservabilitySettings,
    resource_attributes: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> TracingRuntime:
    """Build the tracer provider (sampler from OTEL_TRACES_SAMPLER; batching from OTEL_BSP_*).

    `resource_attributes` describe this replica, e.g. service.version, gen_ai.request.model and
    autoglm.model.version, so a canary's spans can be told from the stable ones.
    """
    env = os.environ if environ is None else environ
    endpoint = trace_endpoint(settings, env)
    if not endpoint:
        logger.info("tracing off: no OTLP endpoint set")
        return disabled_tracing()
    provider = TracerProvider(resource=build_resource(resource_attributes, env))
    # insecure=None lets the exporter decide from OTEL_EXPORTER_OTLP_*_INSECURE and the URL scheme.
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True if settings.otlp_insecure else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info("tracing on: exporting spans to %s", endpoint)
    return TracingRuntime(tracer=provider.get_tracer(TRACER_NAME), provider=provider, endpoint=endpoint)
