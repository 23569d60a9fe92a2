"""The start-up GPU memory check on a real GPU: the built-in engine reports total/free/reserved and refuses a
KV budget that cannot fit with exit code 78; the daemon exports the gauges; NVML (vLLM's reading) agrees
with CUDA's. Skipped without a GPU; scripts/gpu_memory_check.sh runs it on one."""

from __future__ import annotations

import urllib.request

import pytest
import torch

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.vllm import gpu_probe
from tests.helpers.daemon import running_daemon

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOO_MANY_TOKENS = 10**10  # KV for ten billion tokens fits no GPU


async def test_builtin_engine_reports_what_it_reserved_against_the_gpu() -> None:
    settings = EngineSettings.model_validate({"device": "cuda", "model": "builtin:small", "gpu_memory_fraction": 0.5})
    engine = AsyncEngine(settings)
    await engine.start()
    try:
        (check,) = engine.stats().gpu_memory
        _, total = torch.cuda.mem_get_info()
        assert check.fits
        assert check.device.total_bytes == total
        parts = dict(check.reservation.parts)
        assert parts["weights"] > 0
        assert parts["KV budget"] > 0
        assert check.reservation.bytes <= check.share_bytes
    finally:
        await engine.shutdown()


async def test_builtin_engine_refuses_a_kv_budget_that_cannot_fit() -> None:
    settings = EngineSettings.model_validate(
        {"device": "cuda", "model": "builtin:small", "max_batch_tokens": TOO_MANY_TOKENS}
    )
    engine = AsyncEngine(settings)
    try:
        with pytest.raises(gpu_memory.GpuMemoryError, match="does not fit"):
            await engine.start()
    finally:
        await engine.shutdown()


def test_daemon_exits_78_with_a_clear_message_when_the_reservation_cannot_fit() -> None:
    args = ("--auth", "disabled", "--device", "cuda", "--max-batch-tokens", str(TOO_MANY_TOKENS))
    with running_daemon(*args, env={"AUTOGLM_TORCH_THREADS": "0"}, wait_ready=False) as daemon:
        assert daemon.wait(120) == gpu_memory.EXIT_GPU_MEMORY
        log = daemon.log()
    assert "GPU memory reservation cannot fit" in log
    assert "free at start" in log


def test_daemon_exports_its_gpu_memory_gauges() -> None:
    with running_daemon("--auth", "disabled", "--device", "cuda", env={"AUTOGLM_TORCH_THREADS": "0"}) as daemon:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        log = daemon.log()
    for name in ("total", "free_at_start", "reserved", "headroom"):
        assert f"autoglm_gpu_memory_{name}_bytes{{" in text, name
    assert "engine reserves" in log
    assert "fits," in log


def test_nvml_reads_the_same_total_as_cuda() -> None:
    devices = gpu_probe.read_devices(1)
    if devices is None:
        pytest.skip("no NVML binding (vllm or nvidia-ml-py) in this environment")
    _, total = torch.cuda.mem_get_info(0)
    assert devices[0].total_bytes == total
