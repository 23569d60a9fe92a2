"""The engine thread is the only thread that runs the model: loading, warm-up and every step.

Why it matters: each thread that runs a parallel torch operator gets its own OpenMP team, and once
the teams hold more threads than there are CPUs libgomp shortens every worker's spin to ~100
iterations; the engine's decode steps then wait for sleeping workers at each of their parallel
regions (docs/benchmarks.md, "One thread runs the model").
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from autoglm_server.engine.builtin import loader
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.runner import ModelRunner
from autoglm_server.engine.settings import EngineSettings
from tests.engine.conftest import collect, request


async def test_load_warm_up_and_steps_all_run_on_the_engine_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real_load, real_prefill, real_decode = loader.load, ModelRunner.prefill, ModelRunner.decode

    def load(settings: Any) -> Any:
        calls.append(("load", threading.get_ident()))
        return real_load(settings)

    def prefill(self: ModelRunner, prompts: Any, images: Any = (), prefixes: Any = ()) -> Any:
        calls.append(("prefill", threading.get_ident()))
        return real_prefill(self, prompts, images, prefixes)

    def decode(self: ModelRunner, batch: Any) -> Any:
        calls.append(("decode", threading.get_ident()))
        return real_decode(self, batch)

    monkeypatch.setattr(loader, "load", load)
    monkeypatch.setattr(ModelRunner, "prefill", prefill)
    monkeypatch.setattr(ModelRunner, "decode", decode)
    engine = AsyncEngine(EngineSettings(model="builtin:tiny", torch_threads=1))
    await engine.start()
    try:
        warm_up = len(calls)
        tokens, _, _ = await collect(await engine.submit(request("a", [1, 2, 3], max_new_tokens=4)))
        assert len(tokens) >= 1
        thread = engine._thread
        assert thread is not None
        assert thread.ident is not None
        assert [name for name, _ in calls[:warm_up]] == ["load", "prefill", "decode"]
        assert len(calls) > warm_up  # the request's own steps were seen too
        assert {ident for _, ident in calls} == {thread.ident}
        assert thread.ident != threading.get_ident()
    finally:
        await engine.shutdown()


async def test_a_load_failure_reaches_start_and_ends_the_thread(tmp_path: Path) -> None:
    engine = AsyncEngine(EngineSettings(model=str(tmp_path / "missing")))
    with pytest.raises(loader.ModelLoadError, match="does not exist"):
        await engine.start()
    thread = engine._thread
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()
    await engine.shutdown()  # safe after a failed start
