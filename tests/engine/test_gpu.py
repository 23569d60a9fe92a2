"""CUDA paths: memory fraction, token budget from free memory, bfloat16. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from autoglm_server.engine.builtin import loader, memory
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import FinishReason
from tests.engine.conftest import collect, request

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_picks_cuda_and_bfloat16_where_supported() -> None:
    device = loader.resolve_device("auto")
    assert device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert loader.resolve_dtype("auto", device) == expected


def test_token_budget_is_sized_from_free_memory() -> None:
    settings = EngineSettings.model_validate({"max_running": 100_000, "gpu_memory_fraction": 0.5})
    loaded = loader.load(EngineSettings.model_validate({"device": "cuda", "dtype": "bfloat16"}))
    device = torch.device("cuda")
    budget = memory.token_budget(settings, loaded.model, device, 2048)
    per_token = memory.kv_bytes_per_token(loaded.model)
    _, total = torch.cuda.mem_get_info(device)
    assert 2048 <= budget < 100_000 * 2048
    assert budget * per_token <= total * 0.5


async def test_engine_generates_on_cuda_in_bfloat16() -> None:
    settings = EngineSettings.model_validate({"device": "cuda", "dtype": "bfloat16", "gpu_memory_fraction": 0.5})
    engine = AsyncEngine(settings)
    await engine.start()
    try:
        assert (engine.model.device.split(":")[0], engine.model.dtype) == ("cuda", "bfloat16")
        streams = [await engine.submit(request(f"r{i}", [1, 2, 3, i], 16, ignore_eos=True)) for i in range(4)]
        for stream in streams:
            tokens, _, last = await collect(stream)
            assert len(tokens) == 16
            assert last.finish_reason is FinishReason.LENGTH
        stats = engine.stats()
        assert stats.reserved_tokens == 0
        assert stats.token_budget > 0
    finally:
        await engine.shutdown()


async def test_out_of_memory_on_cuda_is_contained() -> None:
    settings = EngineSettings.model_validate({"device": "cuda", "dtype": "bfloat16"})
    armed = {"on": True}

    def inject(phase: str) -> None:
        if armed["on"] and phase == "prefill":
            armed["on"] = False
            raise torch.OutOfMemoryError("injected")

    engine = AsyncEngine(settings, fault_injector=inject)
    await engine.start()
    try:
        from autoglm_server.errors import OutOfMemoryError

        with pytest.raises(OutOfMemoryError):
            await collect(await engine.submit(request("a", [1, 2, 3], 4)))
        tokens, _, _ = await collect(await engine.submit(request("b", [1, 2, 3], 4, ignore_eos=True)))
        assert len(tokens) == 4
    finally:
        await engine.shutdown()
