"""Out of memory while the KV cache merges joining rows or drops leaving ones (the runner's fault seam).

The merge and the select copy the cache layer by layer; the fault is raised before the first layer's
copy or between layers, so a failure part-way is covered too. After each, the requests that keep
running must produce exactly what generate() produces (the KV state is consistent), and the engine
holds nothing once they are done.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from autoglm_server.engine.types import FinishReason
from autoglm_server.errors import OutOfMemoryError
from tests.engine.conftest import collect, request, tiny
from tests.engine.test_engine_batching import prompt_of, reference
from tests.engine.test_engine_control import wait_for

LONG = 40


class Faults:
    """Raises torch.OutOfMemoryError on the `nth` call of `phase` after `arm`; slows decode a little."""

    def __init__(self) -> None:
        self.phase = ""
        self.countdown = 0
        self.fired = 0

    def arm(self, phase: str, nth: int) -> None:
        self.phase, self.countdown = phase, nth

    def __call__(self, phase: str) -> None:
        if phase == "decode":
            time.sleep(0.002)  # so that the long requests are still running when the fault comes
        if phase == self.phase and self.countdown:
            self.countdown -= 1
            if self.countdown == 0:
                self.fired += 1
                raise torch.OutOfMemoryError(f"injected in {phase}")


async def _assert_idle_and_serving(engine: Any) -> None:
    await wait_for(lambda: engine.stats().running == 0)
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.reserved_tokens, stats.alive) == (0, 0, 0, True)
    assert engine._core.batch_rows == 0
    tokens, _, _ = await collect(await engine.submit(request("after", prompt_of(3), 12, ignore_eos=True)))
    assert tokens == reference("llama", prompt_of(3), 12)


@pytest.mark.parametrize("nth", [1, 2], ids=["first-layer", "second-layer"])
async def test_oom_in_merge_fails_only_the_joining_request(make_engine: Any, nth: int) -> None:
    assert tiny("llama").model.config.num_hidden_layers == 2  # nth=2 fails between the two layers
    faults = Faults()
    engine = await make_engine(fault_injector=faults)
    running = [await engine.submit(request(f"r{i}", prompt_of(i), LONG, ignore_eos=True)) for i in (1, 2)]
    first = [await anext(stream) for stream in running]
    faults.arm("merge", nth)
    # A longer prompt than the running rows': the merge pads them on the left (the harder case).
    joiner = await engine.submit(request("joiner", prompt_of(4), 8, ignore_eos=True))
    with pytest.raises(OutOfMemoryError):
        await collect(joiner)
    assert faults.fired == 1
    for i, (stream, head) in enumerate(zip(running, first, strict=True), start=1):
        tokens, _, last = await collect(stream)
        assert head.token_ids + tokens == reference("llama", prompt_of(i), LONG), f"running request {i}"
        assert last.finish_reason is FinishReason.LENGTH
    await _assert_idle_and_serving(engine)


@pytest.mark.parametrize("nth", [1, 2], ids=["first-layer", "second-layer"])
async def test_oom_in_select_fails_the_rows_left_in_the_batch(make_engine: Any, nth: int) -> None:
    faults = Faults()
    engine = await make_engine(fault_injector=faults)
    long = await engine.submit(request("long", prompt_of(1), LONG * 10, ignore_eos=True))
    await anext(long)
    short = await engine.submit(request("short", prompt_of(2), 6, ignore_eos=True))
    await anext(short)
    # The short request finishing is what makes the batch drop a row.
    faults.arm("select", nth)
    _, _, last = await collect(short)
    assert last.finish_reason is FinishReason.LENGTH
    with pytest.raises(OutOfMemoryError):
        await collect(long)
    assert faults.fired == 1
    await _assert_idle_and_serving(engine)


async def test_oom_in_select_after_a_cancel(make_engine: Any) -> None:
    faults = Faults()
    engine = await make_engine(fault_injector=faults)
    streams = [await engine.submit(request(f"r{i}", prompt_of(i), LONG * 10, ignore_eos=True)) for i in range(3)]
    for stream in streams:
        await anext(stream)
    faults.arm("select", 1)
    await streams[0].aclose()  # the cancelled row leaves the batch: that select runs out of memory
    for stream in streams[1:]:
        with pytest.raises(OutOfMemoryError):
            await collect(stream)
    await _assert_idle_and_serving(engine)
