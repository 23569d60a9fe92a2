"""Device memory: the CUDA memory fraction, the KV token budget, and the start-up headroom check."""

from __future__ import annotations

import logging
from typing import Any

import torch

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.settings import EngineSettings

log = logging.getLogger(__name__)

# Share of the memory left after loading that the KV cache may take; the rest is for activations.
_KV_SHARE = 0.7
# Left padding and the copy made when rows merge can double what the reservations account for.
_PADDING_OVERHEAD = 2


def apply_memory_fraction(settings: EngineSettings, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_fraction, device)
        log.info("CUDA memory fraction set to %.2f", settings.gpu_memory_fraction)


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of K and V one token takes over all layers."""
    config = model.config.get_text_config()
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = int(config.num_hidden_layers)
    itemsize: int = model.dtype.itemsize
    return 2 * layers * kv_heads * head_dim * itemsize


def token_budget(settings: EngineSettings, model: Any, device: torch.device, context: int) -> int:
    """--max-batch-tokens, or sized: max_running x context, and on CUDA what free memory holds."""
    if settings.max_batch_tokens:
        return settings.max_batch_tokens
    budget = settings.max_running * context
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allowed = total * settings.gpu_memory_fraction - torch.cuda.memory_reserved(device)
        usable = max(0.0, min(float(free), allowed)) * _KV_SHARE
        fits = int(usable // (kv_bytes_per_token(model) * _PADDING_OVERHEAD))
        log.info("KV budget from free memory: %.2f GiB usable holds %d tokens (cap %d)", usable / 2**30, fits, budget)
        budget = max(context, min(budget, fits))
    log.info("token budget: %d tokens over at most %d running requests", budget, settings.max_running)
    return budget


# ------------------------------------------------------------------ start-up headroom (CUDA only)
def device_memory(device: torch.device) -> gpu_memory.DeviceMemory:
    """Total and free memory of DEVICE now (on the engine thread, before the model is loaded)."""
    free, total = torch.cuda.mem_get_info(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return gpu_memory.DeviceMemory(index=index, total_bytes=int(total), free_bytes=int(free))


def weights_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def reservation(model: Any, device: torch.device, budget: int) -> gpu_memory.Reservation:
    """Weights, the warm-up's workspace (what the allocator holds beyond them) and the KV budget at its worst."""
    weights = weights_bytes(model)
    workspace = max(0, int(torch.cuda.memory_reserved(device)) - weights)
    kv = budget * kv_bytes_per_token(model) * _PADDING_OVERHEAD
    return gpu_memory.Reservation((("weights", weights), ("workspace", workspace), ("KV budget", kv)))


def check_headroom(
    settings: EngineSettings, before: gpu_memory.DeviceMemory, model: Any, device: torch.device, budget: int
) -> gpu_memory.HeadroomCheck:
    """Report what the engine reserved against the memory found at start; refuse when it cannot fit."""
    verdict = gpu_memory.check(before, reservation(model, device, budget), settings.gpu_memory_fraction)
    (log.info if verdict.fits else log.error)("%s", verdict.report())
    gpu_memory.require_fit([verdict], "built-in")
    return verdict


def weights_do_not_fit(
    before: gpu_memory.DeviceMemory, fraction: float, error: BaseException
) -> gpu_memory.GpuMemoryError:
    """The error for a model whose weights ran out of memory while loading."""
    return gpu_memory.GpuMemoryError(
        f"the model's weights do not fit GPU {before.index} ({before.total_bytes / gpu_memory.GIB:.2f} GiB total, "
        f"{before.free_bytes / gpu_memory.GIB:.2f} GiB free at start, --gpu-memory-fraction {fraction:g}): "
        f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; serve a smaller model or a "
        "smaller --dtype, or free the GPU"
    )
