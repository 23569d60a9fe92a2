"""Metrics after real calls through the interceptors, parsed with prometheus_client; log formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server.engine.types import EngineStats
from autoglm_server.observability import log_context
from autoglm_server.observability.logging_setup import configure_logging, redact
from autoglm_server.observability.metrics import Metrics, metrics_route
from autoglm_server.observability.settings import ObservabilitySettings
from tests.observability.conftest import MODEL, ToyServer

GENERATE = "/autoglm.v1.GenerationService/Generate"


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = metrics_route(metrics)({}).body.decode()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = {"model": MODEL, "version": "v-test", **labels}
    return found[(name, frozenset(wanted.items()))]


async def test_counts_match_the_calls_made(toy: ToyServer) -> None:
    for _ in range(5):
        async for _message in toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=3)):
            pass
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            async for _message in toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=0)):
                pass
    toy.metrics.bind_engine(
        lambda: EngineStats(running=2, waiting=1, reserved_tokens=40, token_budget=100, steps=9, alive=True)
    )
    toy.metrics.observe_batch_size(3)
    toy.metrics.auth_failure("expired")
    toy.metrics.auth_failure("something new")
    toy.metrics.key_refreshed(newest_key_created_at=1000.0, at=2000.0)

    found = samples(toy.metrics)
    assert value(found, "autoglm_requests_total", method=GENERATE, code="OK", protocol="grpc") == 5
    assert value(found, "autoglm_requests_total", method=GENERATE, code="INVALID_ARGUMENT", protocol="grpc") == 2
    assert value(found, "autoglm_time_to_first_token_seconds_count", protocol="grpc") == 5
    assert value(found, "autoglm_request_duration_seconds_count", protocol="grpc") == 5
    assert value(found, "autoglm_queue_time_seconds_count", protocol="grpc") == 5
    assert value(found, "autoglm_inter_token_latency_seconds_count", protocol="grpc") == 5 * 2
    assert value(found, "autoglm_prompt_tokens_total", protocol="grpc") == 5 * 3
    assert value(found, "autoglm_generated_tokens_total", protocol="grpc") == 5 * 3
    assert value(found, "autoglm_rejections_total", reason="invalid", protocol="grpc") == 2
    assert value(found, "autoglm_requests_running") == 2
    assert value(found, "autoglm_requests_waiting") == 1
    assert value(found, "autoglm_token_budget_used") == 40
    assert value(found, "autoglm_token_budget_total") == 100
    assert value(found, "autoglm_batch_size_count") == 1
    assert value(found, "autoglm_auth_failures_total", reason="expired", protocol="grpc") == 1
    assert value(found, "autoglm_auth_failures_total", reason="other", protocol="grpc") == 1
    assert value(found, "autoglm_key_last_refresh_timestamp_seconds") == 2000.0
    assert value(found, "autoglm_key_age_seconds") > 0
    assert value(found, "autoglm_build_info", revision="abc", server_version=_server_version()) == 1


def _server_version() -> str:
    from autoglm_server import __version__

    return __version__


def test_two_metrics_objects_do_not_collide() -> None:
    first = Metrics(model="a", version="1")
    second = Metrics(model="b", version="2")
    first.observe_batch_size(1)
    assert b'autoglm_batch_size_count{model="a",version="1"} 1.0' in first.render()
    assert b'model="a"' not in second.render()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_trace_request_and_subject(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(ObservabilitySettings(log_format="json", log_level="debug"), stream=out)
    tracer = TracerProvider().get_tracer("t")
    log_context.set_request_id("req-7")
    log_context.set_subject("alice")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("autoglm_server.test").info("hello %s", "world", extra={"tokens": 3})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "hello world"
    assert entry["level"] == "info"
    assert entry["logger"] == "autoglm_server.test"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert (entry["request_id"], entry["subject"], entry["tokens"]) == ("req-7", "alice", 3)
    assert entry["time"].endswith("+00:00")


def test_text_format_on_a_terminal_and_json_when_piped(restore_logging: None) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    configure_logging(ObservabilitySettings(log_format="auto"), stream=tty)
    logging.getLogger("x").warning("plain")
    assert "WARNING" in tty.getvalue()
    assert not tty.getvalue().startswith("{")
    piped = io.StringIO()
    configure_logging(ObservabilitySettings(log_format="auto"), stream=piped)
    logging.getLogger("x").warning("plain")
    assert json.loads(piped.getvalue())["message"] == "plain"


def test_tokens_never_reach_the_log(restore_logging: None) -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    out = io.StringIO()
    configure_logging(ObservabilitySettings(log_format="json"), stream=out)
    logging.getLogger("x").error("bad token %s", jwt)
    logging.getLogger("x").error("header authorization: Bearer abc.def.ghi")
    logging.getLogger("x").error("vault said %s", {"token": "hvs.SECRET123"})
    text = out.getvalue()
    for secret in (jwt, "abc.def.ghi", "hvs.SECRET123"):
        assert secret not in text
    assert redact("nothing secret here") == "nothing secret here"


async def test_access_log_line_per_rpc(toy: ToyServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="autoglm_server.access")
    async for _message in toy.stub.Generate(pb.GenerateRequest(text="hi", max_new_tokens=3, request_id="acc-1")):
        pass
    await toy.stub.Tokenize(pb.TokenizeRequest(text="x"))
    for _ in range(500):  # a bound for a loaded machine; it breaks as soon as both lines are logged
        if len([r for r in caplog.records if r.name == "autoglm_server.access"]) == 2:
            break
        await __import__("asyncio").sleep(0.02)
    lines = [r for r in caplog.records if r.name == "autoglm_server.access"]
    assert len(lines) == 2
    generate = lines[0].__dict__
    assert generate["grpc_method"] == GENERATE
    assert generate["grpc_code"] == "OK"
    assert (generate["prompt_tokens"], generate["generated_tokens"]) == (3, 3)
    assert generate["finish_reason"] == "length"
    assert generate["request_id"] == "acc-1"
    assert len(generate["trace_id"]) == 32
    assert generate["duration_ms"] >= 0
    assert lines[1].__dict__["grpc_method"].endswith("/Tokenize")
    assert "prompt_tokens" not in lines[1].__dict__
