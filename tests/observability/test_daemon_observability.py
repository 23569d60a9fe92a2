"""The real daemon (a subprocess): its traces reach an OTLP receiver, /metrics counts its calls,
and SIGTERM drains in-flight streams."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server import names
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.observability.show_trace import span_tree

GENERATE = "/autoglm.v1.GenerationService/Generate"
VERSION = "canary-7"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def daemon(receiver: OtlpReceiver) -> Iterator[Daemon]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running_daemon("--auth", "disabled", "--model-version", VERSION, "--log-format", "json", env=env) as running:
        yield running


async def generate(target: str, request: pb.GenerateRequest, **kwargs: object) -> list[pb.GenerateResponse]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        return [message async for message in stub.Generate(request, **kwargs)]


async def test_daemon_trace_continues_the_callers_trace(daemon: Daemon, receiver: OtlpReceiver) -> None:
    caller = TracerProvider().get_tracer("test-caller")
    with caller.start_as_current_span("caller", kind=SpanKind.CLIENT) as caller_span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        messages = await generate(
            daemon.target,
            pb.GenerateRequest(text="hello", max_new_tokens=8, ignore_eos=True, request_id="trace-me"),
            metadata=tuple(carrier.items()),
        )
    assert messages[-1].finished.usage.completion_tokens == 8
    trace_id = trace.format_trace_id(caller_span.get_span_context().trace_id)

    spans = await receiver.wait_for_spans_async(4, lambda span: span.trace_id == trace_id)
    (server,) = [span for span in spans if span.name == GENERATE.lstrip("/")]
    assert server.parent_span_id == trace.format_span_id(caller_span.get_span_context().span_id)
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["autoglm.request_id"] == "trace-me"
    assert server.attributes["gen_ai.request.max_tokens"] == 8
    assert server.attributes["gen_ai.usage.output_tokens"] == 8
    assert server.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert server.event("gen_ai.first_token") is not None
    assert server.resource["autoglm.model.version"] == VERSION
    phases = {span.name for span in spans if span.parent_span_id == server.span_id}
    assert phases == {"autoglm.queue", "autoglm.prefill", "autoglm.decode"}
    # The manual check's printout (python -m tests.observability.show_trace): server, then its phases.
    tree = [line.strip() for line in span_tree(spans) if "└─" in line]
    assert tree[0].startswith("└─ autoglm.v1.GenerationService/Generate [server]")
    assert [line.split()[1] for line in tree[1:]] == ["autoglm.queue", "autoglm.prefill", "autoglm.decode"]


async def test_bad_request_leaves_a_span_with_its_code(daemon: Daemon, receiver: OtlpReceiver) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(daemon.target, pb.GenerateRequest(text="x", max_new_tokens=1, top_logprobs=99))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    spans = await receiver.wait_for_spans_async(
        1, lambda span: span.attributes.get("rpc.grpc.status_code") == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )
    assert spans[0].name == GENERATE.lstrip("/")


def scrape(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{daemon.admin_url}{names.METRICS_PATH}", timeout=10) as reply:
        body = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def metric(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    for (sample_name, sample_labels), value in found.items():
        if sample_name == name and set(labels.items()) <= sample_labels and ("version", VERSION) in sample_labels:
            return value
    return 0.0


def generate_calls(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    """autoglm_requests_total of Generate, every code together."""
    return sum(
        value
        for (name, labels), value in found.items()
        if name == "autoglm_requests_total" and ("method", GENERATE) in labels and ("version", VERSION) in labels
    )


async def settled(
    daemon: Daemon, done: Callable[[dict[tuple[str, frozenset[tuple[str, str]]], float]], bool], timeout_s: float = 30
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape until `done` holds (the last scrape is returned either way: the asserts then say what is off)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await asyncio.to_thread(scrape, daemon)
        if done(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_metrics_count_what_was_sent(daemon: Daemon) -> None:
    before = scrape(daemon)
    for _ in range(5):
        await generate(daemon.target, pb.GenerateRequest(text="count me", max_new_tokens=4, ignore_eos=True))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await generate(daemon.target, pb.GenerateRequest(text="x", max_new_tokens=1, top_logprobs=99))
    # The server counts an RPC when its task ends, just after the client saw the answer: wait for
    # all 7 to be counted (an event, not a fixed pause), then compare exactly.
    after = await settled(daemon, lambda found: generate_calls(found) - generate_calls(before) >= 7)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("autoglm_requests_total", method=GENERATE, code="OK") == 5
    assert delta("autoglm_requests_total", method=GENERATE, code="INVALID_ARGUMENT") == 2
    assert delta("autoglm_time_to_first_token_seconds_count") == 5
    assert delta("autoglm_request_duration_seconds_count") == 5
    assert delta("autoglm_generated_tokens_total") == 20
    assert delta("autoglm_batch_size_count") >= 1  # the engine's step listener feeds it
    assert delta("autoglm_rejections_total", reason="invalid") == 2
    assert metric(after, "autoglm_build_info") == 1
    assert metric(after, "autoglm_requests_running") == 0


async def test_prompt_over_the_context_counts_as_too_long(daemon: Daemon) -> None:
    before = scrape(daemon)
    too_long = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[7] * 5000), max_new_tokens=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(daemon.target, too_long)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = await settled(daemon, lambda found: generate_calls(found) > generate_calls(before))
    too_long_count = metric(after, "autoglm_rejections_total", reason="too_long")
    assert too_long_count - metric(before, "autoglm_rejections_total", reason="too_long") == 1


async def test_sigterm_drains_in_flight_streams_and_exits_zero() -> None:
    tokens = 300
    with running_daemon("--auth", "disabled", "--drain-timeout", "120") as daemon:
        async with grpc.aio.insecure_channel(daemon.target) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)
            calls = [
                stub.Generate(pb.GenerateRequest(text=f"stream {i}", max_new_tokens=tokens, ignore_eos=True))
                for i in range(8)
            ]
            for call in calls:  # every stream admitted and producing before the signal
                assert (await call.read()).WhichOneof("kind") == "started"
                assert (await call.read()).WhichOneof("kind") == "chunk"
            daemon.signal(signal.SIGTERM)

            health = await _readiness_during_drain(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Tokenize(pb.TokenizeRequest(text="late"))  # (Generate alike; cheaper)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as refused_generate:
                async for _ in stub.Generate(pb.GenerateRequest(text="late", max_new_tokens=2)):
                    pass
            assert refused_generate.value.code() is grpc.StatusCode.UNAVAILABLE

            finished = []
            for call in calls:
                finished.append(await _last_message(call))
        assert health == health_pb2.HealthCheckResponse.NOT_SERVING
        assert [f.usage.completion_tokens for f in finished] == [tokens] * 8
        try:
            assert daemon.wait(60) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit after the drain:\n{daemon.log()}")


async def _last_message(call: grpc.aio.UnaryStreamCall) -> pb.GenerateFinished:
    last = None
    while (message := await call.read()) is not grpc.aio.EOF:
        last = message
    assert last is not None
    assert last.WhichOneof("kind") == "finished"
    return last.finished


async def _readiness_during_drain(channel: grpc.aio.Channel) -> int:
    from grpc_health.v1 import health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    # Polled until it changes (the daemon handles SIGTERM on its event loop, later on a loaded
    # machine); the streams in flight hold the drain open far longer than this can take.
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=names.READINESS_SERVICE), timeout=5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING or asyncio.get_running_loop().time() > deadline:
            return int(reply.status)
        await asyncio.sleep(0.05)
