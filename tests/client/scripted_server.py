"""A real gRPC server with a small scripted GenerationService, for the SDK's own tests.

It speaks the real autoglm.v1 protocol on 127.0.0.1 port 0, without torch: each generated token
is `(last prompt id + step) % vocab`, and its text is `<id>` followed by a space. Prompts named in
ERRORS fail with that status (RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo). Chat takes the
UTF-8 bytes of every text part, joined, as its prompt ids (images add none) and answers as Generate
does; each ChatRequest is kept as it arrived. Every call's metadata is recorded, so tests can see the
bearer token, the trace context and the session that arrived.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc

VOCAB = 1000
MODEL_ID = "scripted:test"
ERRORS = {
    "invalid": (code_pb2.INVALID_ARGUMENT, "max_new_tokens: must be in [1, 512], got 0"),
    "overloaded": (code_pb2.RESOURCE_EXHAUSTED, "the waiting queue is full (max_waiting=4)"),
    "unavailable": (code_pb2.UNAVAILABLE, "draining"),
    "internal": (code_pb2.INTERNAL, "internal error (correlation id abc123)"),
}
RETRY_AFTER_S = 1.25


def _abort(context: grpc.ServicerContext, code: int, message: str) -> None:
    status = status_pb2.Status(code=code, message=message)
    if code == code_pb2.RESOURCE_EXHAUSTED:
        delay = duration_pb2.Duration(seconds=1, nanos=250_000_000)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class Recorder:
    """What the server saw: metadata of each call, and how many Generate calls were cancelled."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    cancelled: int = 0
    generate_calls: int = 0
    chat_requests: list[pb.ChatRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})


class ScriptedService(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, recorder: Recorder, token_delay_s: float) -> None:
        self._recorder = recorder
        self._delay = token_delay_s

    def Generate(self, request: pb.GenerateRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        self._recorder.record(context)
        with self._recorder.lock:
            self._recorder.generate_calls += 1
        if request.WhichOneof("prompt") == "text" and request.text in ERRORS:
            _abort(context, *ERRORS[request.text])
        ids = list(request.token_ids.ids) if request.HasField("token_ids") else list(request.text.encode())
        yield from self._reply(pb.GenerateResponse, ids, request, context)

    def Chat(self, request: pb.ChatRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        self._recorder.record(context)
        with self._recorder.lock:
            self._recorder.chat_requests.append(request)
        texts = [part.text for message in request.messages for part in message.content if part.HasField("text")]
        if texts and texts[-1] in ERRORS:
            _abort(context, *ERRORS[texts[-1]])
        yield from self._reply(pb.ChatResponse, list("".join(texts).encode()), request, context)

    def _reply(
        self,
        response: type[pb.GenerateResponse] | type[pb.ChatResponse],
        ids: list[int],
        request: pb.GenerateRequest | pb.ChatRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[Any]:
        count = request.max_new_tokens if request.HasField("max_new_tokens") else 8
        yield response(
            started=pb.GenerateStarted(
                request_id=request.request_id or "req-1", prompt_tokens=len(ids), model_id=MODEL_ID
            )
        )
        last = ids[-1] if ids else 0
        done = threading.Event()

        def on_termination() -> None:  # the RPC ended: cancelled unless the stream completed
            if not done.is_set():
                with self._recorder.lock:
                    self._recorder.cancelled += 1

        context.add_callback(on_termination)
        for step in range(1, count + 1):
            token = (last + step) % VOCAB
            chunk = pb.TokenChunk(text=f"{token} ", token_ids=[token])
            if request.logprobs:
                chunk.logprobs.append(pb.TokenLogprob(token_id=token, logprob=-0.5))
            yield response(chunk=chunk)
            time.sleep(self._delay)
        usage = pb.Usage(prompt_tokens=len(ids), completion_tokens=count, queue_time_ms=0.1, time_to_first_token_ms=1.0)
        done.set()
        yield response(finished=pb.GenerateFinished(finish_reason=pb.FINISH_REASON_LENGTH, usage=usage))

    def Tokenize(self, request: pb.TokenizeRequest, context: grpc.ServicerContext) -> pb.TokenizeResponse:
        self._recorder.record(context)
        ids = list(request.text.encode())
        if request.add_special_tokens:
            ids.insert(0, 999)
        return pb.TokenizeResponse(token_ids=ids, count=len(ids))

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        self._recorder.record(context)
        info = pb.ModelInfo(
            model_id=MODEL_ID,
            vocab_size=VOCAB,
            max_context_length=2048,
            eos_token_ids=[2],
            dtype="float32",
            device="cpu",
            warnings=["scripted"],
            supports_chat=True,
            supports_images=True,
            max_images_per_request=4,
        )
        return pb.GetModelInfoResponse(model_info=info)


@dataclass
class ScriptedServer:
    target: str
    recorder: Recorder
    health: health.HealthServicer


@contextlib.contextmanager
def running_scripted_server(
    *, credentials: grpc.ServerCredentials | None = None, token_delay_s: float = 0.0
) -> Iterator[ScriptedServer]:
    """Serve on 127.0.0.1 port 0 (TLS when `credentials` is given) until the block ends."""
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ScriptedService(recorder, token_delay_s), server
    )
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("autoglm.v1.GenerationService", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield ScriptedServer(target=f"127.0.0.1:{port}", recorder=recorder, health=health_servicer)
    finally:
        server.stop(grace=None).wait()
