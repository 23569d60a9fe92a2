"""Settings of the OpenAI-compatible HTTP front door (part of config.Settings)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from autoglm_server import names


class HttpSettings(BaseModel):
    """Where the OpenAI-compatible HTTP API listens and what it accepts."""

    http_listen: str = Field(
        names.DEFAULT_HTTP_LISTEN,
        description="host:port of the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,"
        " /v1/models, /health); empty turns it off",
    )
    served_model_name: str = Field(
        "",
        description="the model name clients send and /v1/models lists (default: --model); for Open-AutoGLM,"
        " autoglm-phone-9b",
    )
    http_metrics: bool = Field(
        True,
        description="also serve /metrics (no JWT) on the HTTP port, where inference routers (the Gateway API"
        " Inference Extension's endpoint picker) scrape by default; the mesh lets only the router and"
        " Prometheus reach it",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="largest HTTP request body (JSON with its data: URL images); larger gets 413",
    )
    http_body_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client has to send its whole request body, counted from when the daemon starts"
        " reading it; slower (a stalled or trickling body) gets 408 and the connection is closed",
    )
