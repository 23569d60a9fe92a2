"""Helpers of the vLLM tests: settings for an engine over a tiny model, and process checks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.vllm.settings import VllmSettings

# Warnings raised inside third-party packages while vLLM runs (see conftest.py).
THIRD_PARTY_WARNINGS = [
    "ignore::DeprecationWarning:vllm.*",
    "ignore::FutureWarning:vllm.*",
    "ignore::DeprecationWarning:torch.*",
    "ignore::FutureWarning:torch.*",
    "ignore::UserWarning:torch.*",
    "ignore::DeprecationWarning:transformers.*",
    "ignore::FutureWarning:transformers.*",
    "ignore::UserWarning:multiprocessing.*",
    # vLLM leaves its ZMQ contexts to the garbage collector after shutdown.
    "ignore:Unclosed context:ResourceWarning",
    r"ignore:Exception ignored in. <function Context.__del__:pytest.PytestUnraisableExceptionWarning",
]

# Eager mode: vLLM's CPU torch.compile warm-up takes minutes on two cores and proves nothing here.
# A small KV cache keeps each engine's memory modest.
TEST_VLLM_ARGS = ["enforce_eager=true", f"kv_cache_memory_bytes={256 << 20}"]


class EngineTestSettings(VllmSettings, EngineSettings, BaseModel):
    """The engine's share of config.Settings (the daemon's full Settings adds servers and auth)."""

    limit_images_per_request: int = 10


def settings(model: str, **overrides: Any) -> EngineTestSettings:
    values: dict[str, Any] = {
        "model": model,
        "engine": "vllm",
        "dtype": "bfloat16",
        "max_running": 4,
        "max_waiting": 4,
        "vllm_arg": list(TEST_VLLM_ARGS),
    }
    values.update(overrides)
    return EngineTestSettings(**values)


def alive(pids: list[int]) -> list[int]:
    """The pids that still run (zombies count as gone: nothing is left of them but the exit code)."""
    import psutil  # vLLM's dependency: installed where these checks run

    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running
