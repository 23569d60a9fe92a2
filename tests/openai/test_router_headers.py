"""The inference router's request headers on the HTTP front door (shared daemon: auth on, OTLP receiver).

`x-session-id` (the llm-d router's session-affinity header) is honoured like `x-autoglm-session` for
the span and the access line, ours first when both come. The router's control headers grant nothing:
with them and no JWT a call is 401, with a token lacking the scope 403, and /metrics on this port
answers without a JWT only what /metrics answers anyway.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.helpers.daemon import Daemon
from tests.helpers.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.helpers.router_gauges import read_router_gauges
from tests.openai.conftest import Tokens
from tests.openai.support import SERVED, log_lines, sdk, wait_for

CHAT_ROUTE = "/v1/chat/completions"
MESSAGES: list[Any] = [{"role": "user", "content": "Open settings"}]
CONTROL_HEADERS = {
    "x-llm-d-inference-objective": "critical",
    "x-gateway-inference-objective": "critical",
    "x-llm-d-inference-fairness-id": "vip",
    "x-gateway-destination-endpoint": "10.0.0.1:8000",
    "x-gateway-destination-endpoint-served": "10.0.0.1:8000",
    "x-llm-d-model-name-rewrite": SERVED,
}


def _call_with(
    daemon: Daemon, token: str, headers: dict[str, str], receiver: OtlpReceiver
) -> tuple[ReceivedSpan, dict[str, Any]]:
    """One chat call with `headers`; its SERVER span and its access line."""
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with sdk(daemon, token) as client:
        client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=2, extra_headers={**headers, "traceparent": traceparent}
        )
    (span,) = receiver.wait_for_spans(1, lambda s: s.trace_id == trace_id and s.name == f"POST {CHAT_ROUTE}")

    def access_line() -> dict[str, Any] | None:
        for line in log_lines(daemon):
            if line.get("logger") == "autoglm_server.access" and line.get("trace_id") == trace_id:
                return line
        return None

    return span, wait_for(access_line, timeout=10, what=f"the access line of trace {trace_id}")


def test_the_routers_session_header_reaches_the_span_and_the_access_line(
    auth_daemon: Daemon, tokens: Tokens, receiver: OtlpReceiver
) -> None:
    session = f"router-{secrets.token_hex(4)}"
    span, line = _call_with(auth_daemon, tokens.generate, {"x-session-id": session}, receiver)
    assert span.attributes["autoglm.session_id"] == session
    assert line["session_id"] == session


def test_our_session_header_wins_over_the_routers(auth_daemon: Daemon, tokens: Tokens, receiver: OtlpReceiver) -> None:
    ours, theirs = f"ours-{secrets.token_hex(4)}", f"theirs-{secrets.token_hex(4)}"
    span, line = _call_with(auth_daemon, tokens.generate, {"x-autoglm-session": ours, "x-session-id": theirs}, receiver)
    assert span.attributes["autoglm.session_id"] == ours
    assert line["session_id"] == ours


def test_control_headers_without_a_token_are_401(auth_daemon: Daemon) -> None:
    body = json.dumps({"model": SERVED, "messages": MESSAGES, "max_tokens": 2}).encode()
    headers = {**CONTROL_HEADERS, "content-type": "application/json"}
    request = urllib.request.Request(f"{auth_daemon.http_url}/chat/completions", body, headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    caught.value.close()


def test_control_headers_do_not_lend_a_missing_scope(auth_daemon: Daemon, tokens: Tokens) -> None:
    with sdk(auth_daemon, tokens.models_read) as client, pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=2, extra_headers=CONTROL_HEADERS)


def test_the_http_port_serves_the_router_gauges_without_a_jwt(auth_daemon: Daemon) -> None:
    gauges = read_router_gauges(f"http://127.0.0.1:{auth_daemon.http_port}")
    assert gauges.model_name == SERVED
    assert 0 <= gauges.kv_usage <= 1
