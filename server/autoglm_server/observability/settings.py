"""Settings of logging, metrics and tracing (part of config.Settings)."""

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
