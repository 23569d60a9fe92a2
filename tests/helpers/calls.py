"""Drive one Generate (or Chat) call over raw grpc.aio stubs and record how it ended in a Ledger.

Raw stubs (not the SDK) so that a scenario controls exactly when a call is cancelled, how slowly
its stream is read, and which metadata it carries, and sees the status the server sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from autoglm_client import _wire
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.helpers.ledger import Ledger, Outcome

# A call that has not ended this long after its deadline (or after GUARD_S without one) hung.
GUARD_SLACK_S = 10.0
GUARD_S = 120.0


@dataclass(frozen=True)
class CallPlan:
    """How to make and read one call."""

    label: str
    request: pb.GenerateRequest | pb.ChatRequest  # a ChatRequest goes to Chat (e.g. with a screenshot)
    timeout_s: float | None = None
    cancel_after_s: float | None = None  # cancel this long after sending (queued, prefill or decode)
    cancel_after_chunks: int | None = None  # cancel once this many chunks arrived
    read_delay_s: float = 0.0  # sleep between reading messages (a slow consumer)
    metadata: Sequence[tuple[str, str]] = ()


def chat_with_image(prompt: str, image: bytes, max_new_tokens: int = 8, *, ignore_eos: bool = True) -> pb.ChatRequest:
    """A Chat call whose user turn is an image (encoded bytes) and then `prompt`, as an agent step is."""
    content = [pb.ContentPart(image=pb.Image(data=image)), pb.ContentPart(text=prompt)]
    message = pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=content)
    return pb.ChatRequest(messages=[message], max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)


def request(
    prompt: str = "hello world",
    max_new_tokens: int = 8,
    *,
    ignore_eos: bool = True,
    **fields: object,
) -> pb.GenerateRequest:
    return pb.GenerateRequest(text=prompt, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, **fields)  # type: ignore[arg-type]


def stub(channel: grpc.aio.Channel) -> pb_grpc.GenerationServiceStub:
    return pb_grpc.GenerationServiceStub(channel)  # type: ignore[no-untyped-call]


def insecure_channel(target: str) -> grpc.aio.Channel:
    # No retries: a scenario must see every UNAVAILABLE the server sends.
    return grpc.aio.insecure_channel(
        target, options=[("grpc.enable_retries", 0), ("grpc.max_receive_message_length", 64 * 2**20)]
    )


async def run_call(service: pb_grpc.GenerationServiceStub, plan: CallPlan, ledger: Ledger) -> Outcome:
    """Make the call, read it to the end (or cancel it as planned), record the outcome."""
    max_new = plan.request.max_new_tokens if plan.request.HasField("max_new_tokens") else None
    outcome = ledger.open(
        Outcome(label=plan.label, sent_at=time.monotonic(), deadline_s=plan.timeout_s, max_new_tokens=max_new)
    )
    method = service.Chat if isinstance(plan.request, pb.ChatRequest) else service.Generate
    call = method(plan.request, timeout=plan.timeout_s, metadata=tuple(plan.metadata) or None)
    guard = (plan.timeout_s + GUARD_SLACK_S) if plan.timeout_s is not None else GUARD_S
    timer = None
    if plan.cancel_after_s is not None:
        timer = asyncio.get_running_loop().call_later(plan.cancel_after_s, _cancel, call, outcome)
    try:
        await asyncio.wait_for(_read(call, plan, outcome), guard)
    except TimeoutError:
        outcome.hung = True
        call.cancel()
    finally:
        if timer is not None:
            timer.cancel()
        outcome.ended_at = time.monotonic()
        ledger.close(outcome)
    return outcome


def _cancel(call: grpc.aio.UnaryStreamCall, outcome: Outcome) -> None:
    if not call.done():
        outcome.cancelled_by_client = True
        call.cancel()


async def _read(call: grpc.aio.UnaryStreamCall, plan: CallPlan, outcome: Outcome) -> None:
    chunks = 0
    try:
        async for message in call:
            _absorb(message, outcome)
            if message.HasField("chunk"):
                chunks += 1
                if plan.cancel_after_chunks is not None and chunks >= plan.cancel_after_chunks:
                    _cancel(call, outcome)
                    break
            if plan.read_delay_s:
                await asyncio.sleep(plan.read_delay_s)
    except asyncio.CancelledError:
        # grpc.aio raises CancelledError in the reader when the call itself was cancelled;
        # a cancel of this task (the test giving up) must propagate.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except grpc.RpcError as error:
        outcome.code = error.code()
        outcome.message = error.details() or ""
        outcome.retry_after_s = _retry_after(error)
        return
    if outcome.cancelled_by_client:
        outcome.code = grpc.StatusCode.CANCELLED
        outcome.message = "cancelled by the client"
        return
    outcome.code = await call.code()
    outcome.message = await call.details() or ""


def _absorb(message: pb.GenerateResponse | pb.ChatResponse, outcome: Outcome) -> None:
    kind = message.WhichOneof("kind")
    if kind == "started":
        outcome.started = True
    elif kind == "chunk":
        outcome.chunk_times.append(time.monotonic())
        outcome.token_ids.extend(message.chunk.token_ids)
        outcome.text += message.chunk.text
    elif kind == "finished":
        outcome.finished = True
        outcome.finish_reason = message.finished.finish_reason
        outcome.completion_tokens = message.finished.usage.completion_tokens


def _retry_after(error: grpc.RpcError) -> float | None:
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in _wire.parse_status(value).details:
                delay = _wire.parse_retry_delay(detail)
                if delay is not None:
                    return delay
    return None
