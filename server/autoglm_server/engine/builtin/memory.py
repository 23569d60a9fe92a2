"""Device memory: the CUDA memory fraction and the KV token budget."""

from __future__ import annotations

import logging
from typing import Any

import torch

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
