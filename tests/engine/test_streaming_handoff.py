"""The hand-off from the engine thread to the event loop: gathered steps and the step listener."""

from __future__ import annotations

from typing import Any

from autoglm_server.engine.builtin.outbox import Outbox
from autoglm_server.engine.types import FinishReason
from tests.engine.conftest import collect, request


def test_gathered_tokens_wait_for_the_interval_from_the_oldest() -> None:
    outbox = Outbox(interval=60.0)
    assert not outbox.due(0.0)
    assert not outbox.due(59.0)
    assert outbox.due(60.0)
    # The clock starts again at the next step that gathers.
    assert not outbox.due(100.0)
    assert outbox.due(160.5)


def test_interval_zero_sends_every_step() -> None:
    outbox = Outbox(interval=0.0)
    for i in range(3):
        assert outbox.due(float(i))


async def test_first_tokens_and_ends_go_at_once_while_others_gather(make_engine: Any) -> None:
    engine = await make_engine(stream_interval=60.0)  # nothing gathered goes before the end
    first = await engine.submit(request("a", [5, 6, 7], 40, ignore_eos=True))
    opening = await first.__anext__()
    assert len(opening.token_ids) == 1
    second = await engine.submit(request("b", [8, 9], 3, ignore_eos=True))
    b_tokens, _, b_last = await collect(second)
    assert len(b_tokens) == 3
    assert b_last.finish_reason is FinishReason.LENGTH
    # b's first token and its end went at once without taking a's gathered tokens along: a's
    # other 39 tokens come in one delta, its last.
    rest = [delta async for delta in first]
    assert len(rest) == 1
    assert len(rest[0].token_ids) == 39
    assert rest[0].finish_reason is FinishReason.LENGTH


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
