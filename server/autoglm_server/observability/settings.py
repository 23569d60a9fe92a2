"""Settings of logging, metrics and traces (part of config.Settings).

Tracing also follows the standard OpenTelemetry environment variables (OTEL_EXPORTER_OTLP_*,
OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*); the flags here only
override the endpoint and the transport, so an operator can use either.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ObservabilitySettings(BaseModel):
    """Logs, metrics and traces."""

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="json for machines, text for people; auto picks text on a terminal"
    )
    log_prompts: bool = Field(False, description="write prompt and output text to the logs")
    access_log: bool = Field(True, description="write one log line per RPC (method, status, duration, tokens)")
    metrics_enabled: bool = Field(True, description="collect Prometheus metrics and serve them on /metrics")
    otlp_endpoint: str = Field(
        "",
        description=(
            "OTLP/gRPC collector for traces, e.g. http://jaeger:4317; empty falls back to "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; tracing is off when none is set"
        ),
    )
    otlp_insecure: bool = Field(
        False,
        description="send traces without TLS (default: plaintext only for an http:// endpoint or OTEL_*_INSECURE)",
    )
    trace_health_checks: bool = Field(
        False, description="trace grpc.health.v1 and reflection calls too (probes make them frequent)"
    )
