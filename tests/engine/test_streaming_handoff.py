"""The hand-off from the engine thread to the event loop: gathered steps and the step listener."""

from __future__ import annotations

import time
from typing import Any

from autoglm_server.engine.builtin.async_engine import _Outbox
from autoglm_server.engine.builtin.core import Output
from autoglm_server.engine.types import FinishReason, GenerationDelta
from autoglm_server.errors import DeadlineExceededError
from tests.engine.conftest import collect, request


def token(i: int) -> GenerationDelta:
    return GenerationDelta(text=str(i), token_ids=[i])


def ids(outputs: list[Output]) -> list[tuple[str, list[int]]]:
    return [(rid, item.token_ids if isinstance(item, GenerationDelta) else []) for rid, item in outputs]


def test_first_token_goes_at_once_then_steps_are_gathered_until_the_interval() -> None:
    outbox = _Outbox(interval=60.0)
    first = outbox.add([("a", token(1))])
    assert first is not None
    assert ids(first) == [("a", [1])]
    assert outbox.add([("a", token(2))]) is None
    assert outbox.add([("a", token(3))]) is None
    # A new request's first token flushes everything held, in order.
    ready = outbox.add([("a", token(4)), ("b", token(9))])
    assert ready is not None
    assert ids(ready) == [("a", [2]), ("a", [3]), ("a", [4]), ("b", [9])]


def test_finish_and_errors_are_never_held() -> None:
    outbox = _Outbox(interval=60.0)
    outbox.add([("a", token(1)), ("b", token(1))])
    assert outbox.add([("a", token(2))]) is None
    done = GenerationDelta(token_ids=[3], finish_reason=FinishReason.LENGTH)
    ready = outbox.add([("a", done)])
    assert ready is not None
    assert len(ready) == 2
    assert outbox.add([("b", token(2))]) is None
    failed = outbox.add([("b", DeadlineExceededError("late"))])
    assert failed is not None
    assert len(failed) == 2
    # Both requests ended: a request id used again starts afresh (its first token goes at once).
    assert outbox.add([("a", token(1))]) is not None


def test_held_outputs_go_once_the_interval_has_passed() -> None:
    outbox = _Outbox(interval=0.01)
    outbox.add([("a", token(1))])
    assert outbox.add([("a", token(2))]) is None
    time.sleep(0.02)
    ready = outbox.add([("a", token(3))])
    assert ready is not None
    assert len(ready) == 2


def test_interval_zero_sends_every_step() -> None:
    outbox = _Outbox(interval=0.0)
    for i in range(3):
        assert outbox.add([("a", token(i))]) is not None


async def test_gathered_stream_carries_every_token_and_ends(make_engine: Any) -> None:
    engine = await make_engine(stream_interval=60.0)  # everything after the first token is gathered
    stream = await engine.submit(request("r", [5, 6, 7], 12, ignore_eos=True))
    deltas = [delta async for delta in stream]
    assert len(deltas[0].token_ids) == 1  # the first token is not held back
    assert sum(len(d.token_ids) for d in deltas) == 12
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert len(deltas) == 2


async def test_step_listener_sees_each_forward_step_with_its_batch_size(make_engine: Any) -> None:
    sizes: list[int] = []
    engine = await make_engine()
    engine.set_step_listener(sizes.append)
    steps = engine.stats().steps
    tokens, _, last = await collect(await engine.submit(request("r", [1, 2, 3], 6, ignore_eos=True)))
    assert len(tokens) == 6
    assert last.finished
    assert sizes == [1] * 6  # one prefill and five decode steps, each of one row
    assert engine.stats().steps - steps == len(sizes)


async def test_a_failing_step_listener_does_not_stop_the_engine(make_engine: Any) -> None:
    def broken(_size: int) -> None:
        raise ValueError("metrics backend down")

    engine = await make_engine()
    engine.set_step_listener(broken)
    tokens, _, last = await collect(await engine.submit(request("r", [1, 2, 3], 4, ignore_eos=True)))
    assert len(tokens) == 4
    assert last.finish_reason is FinishReason.LENGTH
    assert engine.stats().alive
