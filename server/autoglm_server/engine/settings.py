"""Settings of the model and the engine (part of config.Settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    """Which model to serve, on what, and the engine's admission limits."""

    model: str = Field(
        "builtin:tiny",
        description="builtin:tiny, a local model directory, or a Hugging Face id already in the local cache",
    )
    model_version: str = Field("", description="deployment version label reported in metrics and ModelInfo")
    revision: str = Field("", description="hub revision to load (default: the cache's main ref)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weight dtype; auto picks bfloat16 where the hardware runs it fast"
    )
    max_new_tokens_limit: int = Field(4096, ge=1, description="largest max_new_tokens a request may ask for")
    default_max_new_tokens: int = Field(256, ge=1, description="max_new_tokens when a request leaves it unset")
    max_stop_strings: int = Field(16, ge=0, description="most stop strings per request")
    max_stop_string_bytes: int = Field(256, ge=1, description="longest stop string, in UTF-8 bytes")
