"""Read the GPUs' memory for vLLM's start-up headroom check, without creating a CUDA context.

vLLM's engine core and workers run in processes of their own; a CUDA context in the daemon's process
would take memory on the very GPU they are about to size themselves against. NVML reads total and free
memory without one (vLLM's own parent process reads the GPUs the same way). The decision is
engine/gpu_memory.py's; this module only measures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autoglm_server.engine.gpu_memory import DeviceMemory

log = logging.getLogger(__name__)

# The files a checkpoint's weights are in; safetensors first (what vLLM loads when both are there).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def visible_selectors(count: int, environ: Mapping[str, str] | None = None) -> list[int | str] | None:
    """How NVML finds the first COUNT GPUs CUDA would use: an index or a UUID each.

    None when CUDA_VISIBLE_DEVICES hides every GPU or names MIG instances (whose memory NVML reports per
    instance through other calls: the check is skipped there, vLLM still checks for itself).
    """
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries or any(e.startswith("MIG-") or e == "-1" for e in entries[:count]):
        return None
    chosen: list[int | str] = [int(e) if e.isdigit() else e for e in entries[:count]]
    return chosen


def checkpoint_bytes(model_path: str) -> int | None:
    """Bytes of the weight files in a local model directory; None when it is not one (a hub id)."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    for pattern in WEIGHT_PATTERNS:
        files = list(folder.glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)
    return None


def _nvml() -> Any | None:
    """vLLM's NVML binding, else nvidia-ml-py's; None when neither imports."""
    try:
        from vllm.utils.import_utils import import_pynvml

        return import_pynvml()
    except ImportError:
        pass
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return pynvml


def read_devices(count: int, nvml: Callable[[], Any | None] = _nvml) -> list[DeviceMemory] | None:
    """Total and free memory of the GPUs vLLM will use; None when they cannot be read (no NVIDIA GPU)."""
    selectors = visible_selectors(count)
    lib = nvml()
    if selectors is None or lib is None:
        return None
    try:
        lib.nvmlInit()
    except Exception as exc:  # NVMLError: no driver, no GPU
        log.info("GPU memory check skipped: NVML unavailable (%s)", exc)
        return None
    try:
        devices = []
        for logical, selector in enumerate(selectors):
            if isinstance(selector, int):
                handle = lib.nvmlDeviceGetHandleByIndex(selector)
            else:
                handle = lib.nvmlDeviceGetHandleByUUID(selector)
            info = lib.nvmlDeviceGetMemoryInfo(handle)
            devices.append(DeviceMemory(index=logical, total_bytes=int(info.total), free_bytes=int(info.free)))
        return devices
    except Exception as exc:  # a GPU named but not there: vLLM reports that itself, better than we could
        log.warning("GPU memory check skipped: cannot read GPU memory through NVML (%s)", exc)
        return None
    finally:
        lib.nvmlShutdown()
