"""The daemon's settings as vLLM engine arguments: a pure function, importable without vllm.

The benchmarks call `engine_arg_dict` too, so that vLLM's own server is started with exactly the
engine configuration the daemon gives its vLLM engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from autoglm_server.engine.vision_chat import GLM_MIN_PIXELS, mm_processor_kwargs
from autoglm_server.errors import StartupError

__all__ = ["GLM_MIN_PIXELS", "mm_processor_kwargs"]  # re-exported: the benchmarks and tests use them from here

DEFAULT_IMAGES_PER_REQUEST = 10


class VllmEngineConfig(Protocol):
    """The settings fields the vLLM engine reads (config.Settings has them all)."""

    model: str
    revision: str
    dtype: str
    max_running: int
    max_context_length: int
    gpu_memory_fraction: float
    engine: str
    tensor_parallel_size: int
    max_model_len: int
    enable_prefix_caching: bool
    mm_processor_kwargs: str
    vllm_arg: list[str]


def images_per_request(settings: object) -> int:
    """--limit-images-per-request (serving/images/settings.py), 10 where the setting is absent."""
    return int(getattr(settings, "limit_images_per_request", DEFAULT_IMAGES_PER_REQUEST))


def parse_vllm_args(items: Sequence[str]) -> dict[str, Any]:
    """--vllm-arg KEY=VALUE items as a dict; VALUE is JSON when it parses (true, 4, {...}), else a string."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise StartupError(f"--vllm-arg takes KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def check_known(keys: Iterable[str], known: Iterable[str]) -> None:
    """Refuse --vllm-arg keys that vLLM's AsyncEngineArgs does not have (a typo would be ignored)."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise StartupError(f"--vllm-arg: vLLM's engine arguments have no {', '.join(unknown)}")


def check_device(device: str, platform_is_gpu: bool, platform_name: str) -> None:
    """`--device cuda` where vLLM finds no GPU: one clear line before vLLM fails in its own words.

    The vLLM image sets AUTOGLM_DEVICE=cuda; started on a node without a GPU (or without the NVIDIA
    container toolkit) vLLM would otherwise stop later with a message about device inference.
    """
    if device == "cuda" and not platform_is_gpu:
        raise StartupError(
            f"--device cuda, but vLLM finds no GPU (platform: {platform_name or 'none'}): run on a node with an "
            "NVIDIA GPU and driver >= 580 made visible to the container (NVIDIA container toolkit), or use "
            "--device cpu with a CPU build of vLLM"
        )


def engine_arg_dict(settings: VllmEngineConfig, model_path: str | None = None) -> dict[str, Any]:
    """AsyncEngineArgs keyword arguments for these settings (--vllm-arg entries win).

    `model_path` replaces settings.model where the model was materialised elsewhere (builtin:*).
    Multimodal limits are always given: vLLM ignores them for a text-only model.
    """
    args: dict[str, Any] = {
        "model": model_path or settings.model,
        "dtype": settings.dtype,
        "max_num_seqs": settings.max_running,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_fraction,
        "enable_prefix_caching": settings.enable_prefix_caching,
        # Higher priority first in the daemon's API; vLLM serves lower values first (the engine negates).
        "scheduling_policy": "priority",
        # Images only: a start-up pass profiles every modality allowed, and video is not served.
        "limit_mm_per_prompt": {"image": images_per_request(settings), "video": 0},
        "disable_log_stats": False,  # the scheduler's stats feed EngineStats and the metrics
        "enable_log_requests": False,
    }
    context = settings.max_model_len or settings.max_context_length
    if context:
        args["max_model_len"] = context
    if settings.revision:
        args["revision"] = settings.revision
    kwargs = mm_processor_kwargs(settings.mm_processor_kwargs)
    if kwargs:
        args["mm_processor_kwargs"] = kwargs
    args.update(parse_vllm_args(settings.vllm_arg))
    return args
