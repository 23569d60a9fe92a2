"""Settings of the vLLM engine (part of config.Settings). Importing this module never imports vllm."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class VllmSettings(BaseModel):
    """Which engine serves, and what the vLLM engine is given beyond the shared engine settings.

    The shared settings map onto vLLM's engine arguments: --model, --revision, --dtype, --seed-less
    defaults, --max-running (max_num_seqs), --gpu-memory-fraction (gpu_memory_utilization),
    --max-context-length (max_model_len unless --max-model-len is set), --enable-prefix-caching and
    --limit-images-per-request
    (limit_mm_per_prompt). Admission (--max-waiting and the per-tenant limits) stays in the daemon, in
    front of vLLM's queue.
    """

    engine: Literal["builtin", "vllm"] = Field(
        "builtin",
        description="builtin: the embedded engine over transformers; vllm: vLLM's engine (pip install"
        " 'autoglm-server[vllm]' on a GPU host)",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is split across")
    max_model_len: int = Field(
        0, ge=0, description="vllm: context length in tokens (0: --max-context-length, else the model's)"
    )
    mm_processor_kwargs: str = Field(
        "",
        description="JSON object for the vision model's image processor (both engines); Open-AutoGLM's"
        ' {"max_pixels": N} is accepted and passed as {"size": {"shortest_edge": 12544, "longest_edge": N}}',
    )
    vllm_arg: list[str] = Field(
        default_factory=list,
        description="vllm: one more AsyncEngineArgs field as KEY=VALUE (VALUE parsed as JSON when it parses,"
        " else taken as a string; repeatable), e.g. --vllm-arg enforce_eager=true; unknown keys stop the start",
    )
