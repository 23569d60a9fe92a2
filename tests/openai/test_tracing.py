"""Tracing, metrics and access logs of the HTTP front door, on the shared daemon (auth on, OTLP receiver).

The caller's W3C `traceparent` goes in through the SDK's headers; the daemon's SERVER span for the
route must be its child and carry the GenAI attributes; the metrics must count the call under
protocol="http"; the session header must reach the span and the access line.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.helpers.daemon import Daemon
from tests.helpers.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.helpers.scrape import scrape
from tests.openai.conftest import Tokens
from tests.openai.support import SERVED, log_lines, sdk, wait_for

CHAT_ROUTE = "/v1/chat/completions"
MESSAGES: list[Any] = [{"role": "user", "content": "Open settings"}]


def _traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id and the header naming them (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def client(auth_daemon: Daemon, tokens: Tokens) -> Iterator[openai.OpenAI]:
    with sdk(auth_daemon, tokens.generate) as connected:
        yield connected


def _server_span(receiver: OtlpReceiver, trace_id: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    def is_route(span: ReceivedSpan) -> bool:
        return span.trace_id == trace_id and span.name == f"POST {CHAT_ROUTE}"

    (server,) = receiver.wait_for_spans(1, is_route)
    return server, receiver.spans(lambda span: span.trace_id == trace_id)


def test_the_route_span_continues_the_callers_trace(
    auth_daemon: Daemon, client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    trace_id, parent_id, header = _traceparent()
    before = scrape(auth_daemon.admin_url)
    stream = client.chat.completions.create(
        model=SERVED,
        messages=MESSAGES,
        max_tokens=7,
        temperature=0.0,
        stream=True,
        extra_headers={"traceparent": header},
        extra_body={"ignore_eos": True},
    )
    assert sum(1 for _ in stream) > 0
    server, spans = _server_span(receiver, trace_id)
    assert server.parent_span_id == parent_id
    assert server.kind == trace_pb2.Span.SPAN_KIND_SERVER
    attributes = server.attributes
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == CHAT_ROUTE
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.request.model"] == "builtin:tiny"
    assert attributes["gen_ai.request.max_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["autoglm.tenant"]
    assert server.event("gen_ai.first_token") is not None
    phases = {span.name for span in spans if span.parent_span_id == server.span_id}
    assert phases == {"autoglm.queue", "autoglm.prefill", "autoglm.decode"}

    # The same call in the metrics, under protocol="http" and nowhere else.
    after = scrape(auth_daemon.admin_url)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("autoglm_requests_total", protocol="http", method=CHAT_ROUTE, code="OK") == 1
    assert grew("autoglm_generated_tokens_total", protocol="http") == 7
    assert grew("autoglm_generated_tokens_total", protocol="grpc") == 0
    assert grew("autoglm_time_to_first_token_seconds_count", protocol="http") == 1
    assert grew("autoglm_prompt_tokens_total", protocol="http") == attributes["gen_ai.usage.input_tokens"]


def test_a_refused_request_still_leaves_its_span(client: openai.OpenAI, receiver: OtlpReceiver) -> None:
    trace_id, parent_id, header = _traceparent()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=SERVED, messages=MESSAGES, temperature=-1.0, extra_headers={"traceparent": header}
        )
    server, _ = _server_span(receiver, trace_id)
    assert server.parent_span_id == parent_id
    assert server.attributes["http.response.status_code"] == 400
    assert server.attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
    assert not server.is_error  # the caller's fault, not the server's


def test_the_session_header_reaches_the_span_and_the_access_line(
    auth_daemon: Daemon, tokens: Tokens, receiver: OtlpReceiver
) -> None:
    session = f"agent-{secrets.token_hex(4)}"
    trace_id, _, header = _traceparent()
    # As the README shows: the session rides on every call through the client's default headers.
    with sdk(auth_daemon, tokens.generate, default_headers={"x-autoglm-session": session}) as client:
        reply = client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=3, extra_headers={"traceparent": header}
        )
    assert reply.choices[0].message.content is not None
    server, _ = _server_span(receiver, trace_id)
    assert server.attributes["autoglm.session_id"] == session

    def access_line() -> dict[str, Any] | None:
        for line in log_lines(auth_daemon):
            if line.get("logger") == "autoglm_server.access" and line.get("session_id") == session:
                return line
        return None

    line = wait_for(access_line, timeout=10, what=f"an access line with session_id {session}")
    assert line["http_route"] == CHAT_ROUTE
    assert line["http_status"] == 200
    assert line["grpc_code"] == "OK"
    assert line["trace_id"] == trace_id
    assert line["subject"] == "openai-tester"
    assert line["request_id"] == reply.id.removeprefix("chatcmpl-")
