"""Settings of the model and the engine (part of config.Settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    """Which model to serve, on what, and the engine's admission limits."""

    model: str = Field(
        "builtin:tiny",
        description="builtin:tiny (or builtin:small, ~110M; builtin:glm4v-tiny, a GLM-4.1V that takes images;"
        " all random weights), a local model directory, a Hugging Face id already in the local cache, or"
        " s3://bucket/prefix (fetched and verified into --model-cache-dir before the engine starts)",
    )
    chat_template: str = Field(
        "",
        description="a Jinja chat template file for Chat and /v1/chat/completions (default: the model's own;"
        " builtin models have a simple one)",
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
    max_running: int = Field(32, ge=1, description="most requests decoding together (batch rows)")
    max_waiting: int = Field(
        256, ge=0, description="most admitted requests waiting beyond the free batch rows; more -> RESOURCE_EXHAUSTED"
    )
    max_waiting_per_tenant: int = Field(
        0, ge=0, description="most waiting requests of one tenant (0: same as --max-waiting)"
    )
    max_batch_tokens: int = Field(
        0,
        ge=0,
        description="KV budget in tokens (prompt + max_new_tokens) reserved over all running requests;"
        " 0 sizes it: max-running x context on CPU, from free memory on CUDA",
    )
    max_queue_time: float = Field(
        30.0, gt=0, description="seconds a request may wait for a batch row before RESOURCE_EXHAUSTED"
    )
    max_running_per_tenant: int = Field(
        0, ge=0, description="most running requests of one tenant (0: no limit beyond --max-running)"
    )
    max_prefill_tokens: int = Field(
        4096, ge=1, description="most prompt tokens prefilled in one engine step (at least one request)"
    )
    enable_prefix_caching: bool = Field(
        True,
        description="both engines: keep the KV of prompt prefixes and reuse it for prompts that start the same (an"
        " agent re-sends its history every step); --no-enable-prefix-caching turns it off",
    )
    max_context_length: int = Field(
        0, ge=0, description="context limit in tokens (0: the model's max_position_embeddings)"
    )
    gpu_memory_fraction: float = Field(
        0.9, gt=0, le=1, description="share of the GPU's memory this process may use (CUDA only)"
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads (0: auto, from the model's size and the usable CPUs; a small"
        " model leaves cores to the event loop)",
    )
    stream_interval: float = Field(
        0.02,
        ge=0,
        description="seconds a stream may gather tokens before they are sent as one message (first token,"
        " finish and errors go at once; 0: one message per engine step)",
    )
