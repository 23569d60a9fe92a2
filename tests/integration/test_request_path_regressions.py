"""Regressions on the request path: request_id reuse, the drain's stream count, SIGTERM during start-up.

The servicer and the daemon are driven in-process over a real engine (a tiny random model), so the
order of events that is a race on the wire can be set exactly.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server.app import Daemon
from autoglm_server.config import Settings
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.frontends.grpc import convert
from autoglm_server.frontends.grpc.service import GenerationServicer
from autoglm_server.lifecycle import Phase, ServingState
from autoglm_server.serving.images.limits import ImageLimits
from autoglm_server.serving.pipeline import ServingPipeline
from tests.engine.conftest import tiny

LIMITS = convert.RequestLimits(
    max_new_tokens_limit=256, default_max_new_tokens=16, max_stop_strings=4, max_stop_string_bytes=64
)


class _Context:
    """The three things Generate asks of its grpc.aio context here (no deadline or metadata; abort raises)."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise AssertionError(f"aborted with {code}: {details}")


def _request(request_id: str, max_new_tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id, token_ids=pb.TokenIds(ids=[72, 101, 108]), max_new_tokens=max_new_tokens, ignore_eos=True
    )


async def test_a_finished_stream_does_not_cancel_a_new_stream_that_reuses_its_id() -> None:
    engine = AsyncEngine(EngineSettings(), loaded=tiny("llama"))
    await engine.start()
    try:
        state = ServingState()
        state.phase = Phase.SERVING
        pipeline = ServingPipeline(engine, state, limits=LIMITS, image_limits=ImageLimits())
        servicer = GenerationServicer(pipeline, model_version="t", auth_enabled=False)
        first = servicer.Generate(_request("same", 2), _Context())  # type: ignore[arg-type]
        async with asyncio.timeout(10):
            messages = [message async for message in _until_finished(first)]
        assert messages[-1].WhichOneof("kind") == "finished"
        # `first` has sent its last message but its handler has not returned (gRPC is still writing).
        second = servicer.Generate(_request("same", 8), _Context())  # type: ignore[arg-type]
        assert (await anext(second)).WhichOneof("kind") == "started"
        await first.aclose()  # the first handler's clean-up runs now
        assert state.in_flight() == ["same"]  # the second stream still counts for the drain
        async with asyncio.timeout(10):
            rest = [message async for message in second]
        finished = rest[-1].finished
        assert finished.finish_reason == pb.FINISH_REASON_LENGTH
        assert finished.usage.completion_tokens == 8
        assert state.in_flight() == []
    finally:
        await engine.shutdown()


async def _until_finished(stream: Any) -> Any:
    async for message in stream:
        yield message
        if message.WhichOneof("kind") == "finished":
            return


class _GatedEngine(AsyncEngine):
    """A real engine whose start waits for the test: the model "loads" until the gate opens."""

    def __init__(self, gate: asyncio.Event, started: asyncio.Event) -> None:
        super().__init__(EngineSettings(), loaded=tiny("llama"))
        self._gate = gate
        self._started = started

    async def start(self) -> None:
        self._started.set()
        await self._gate.wait()
        await super().start()


async def test_sigterm_during_model_load_never_reports_serving() -> None:
    gate, loading = asyncio.Event(), asyncio.Event()
    settings = Settings(listen="127.0.0.1:0", admin_listen="", http_listen="", auth="disabled", otlp_endpoint="")
    daemon = Daemon(settings, _GatedEngine(gate, loading))
    readiness: list[bool] = []
    health_set = daemon._health.set

    async def record(*, live: bool, ready: bool) -> None:
        readiness.append(ready)
        await health_set(live=live, ready=ready)

    daemon._health.set = record  # type: ignore[method-assign]
    run = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(30):
            await loading.wait()
            daemon._on_signal(signal.SIGTERM)  # what the loop's handler calls on SIGTERM
            gate.set()
            assert await run == 0
    finally:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    assert True not in readiness
