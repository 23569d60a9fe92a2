"""Hostile and malformed HTTP requests get the right status and an OpenAI error body naming the field.

Raw HTTP (httpx2), not the SDK: the SDK never sends most of these. A valid token goes with each
request, so that the body is what is judged (auth comes before the body is read).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.helpers.daemon import Daemon
from tests.openai.conftest import Tokens
from tests.openai.support import SERVED, root_url

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http(auth_daemon: Daemon, tokens: Tokens) -> Iterator[httpx2.Client]:
    headers = {"authorization": f"Bearer {tokens.generate}", "content-type": "application/json"}
    with httpx2.Client(base_url=root_url(auth_daemon), headers=headers, timeout=60) as client:
        yield client


def _error(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    assert error["type"] == "invalid_request_error"
    return error


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": SERVED, "messages": USER, **fields}).encode()


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        (CHAT, b"{not json", "body", "not valid JSON"),
        (CHAT, b"", "body", "not valid JSON"),
        (CHAT, b"[1, 2]", "body", "should be an object"),
        (CHAT, b'"a string"', "body", "should be an object"),
        (CHAT, json.dumps({"model": SERVED, "messages": "hi"}).encode(), "messages", "valid array"),
        (CHAT, json.dumps({"model": SERVED, "messages": [{"role": "user", "content": 5}]}).encode(),
         "messages[0].content", "valid string"),
        (CHAT, json.dumps({"model": SERVED, "messages": [{"role": "robot", "content": "x"}]}).encode(),
         "messages[0].role", "must be one of system, user, assistant, tool, got 'robot'"),
        (CHAT, _chat(max_tokens="ten"), "max_tokens", "valid integer"),
        (CHAT, _chat(max_tokens=10.5), "max_tokens", "valid integer"),
        (CHAT, _chat(stream="yes"), "stream", "valid boolean"),
        (CHAT, _chat(temperature="hot"), "temperature", ""),
        (CHAT, json.dumps({"messages": USER}).encode(), "model", "Field required"),
        (CHAT, json.dumps({"model": 5, "messages": USER}).encode(), "model", "valid string"),
        (CHAT, json.dumps({"model": SERVED}).encode(), "messages", "Field required"),
        (CHAT, json.dumps({"model": SERVED, "messages": []}).encode(), "messages", "at least one message"),
        (CHAT, _chat(n=2), "n", "only n=1 is served, got 2"),
        (CHAT, _chat(tools=[{"type": "function", "function": {"name": "tap"}}]), "tools", "tool calling is not served"),
        (CHAT, _chat(response_format={"type": "json_object"}), "response_format", "only the text response format"),
        (CHAT, _chat(temperature=-1), "temperature", "must be a finite number >= 0, got -1.0"),
        (CHAT, _chat(top_p=0), "top_p", "must be in (0, 1], got 0.0"),
        (CHAT, _chat(max_tokens=0), "max_tokens", "must be in [1, 4096], got 0"),
        (CHAT, _chat(frequency_penalty=2.5), "frequency_penalty", "must be in [-2, 2], got 2.5"),
        (CHAT, _chat(stop=[""]), "stop[0]", "must not be empty"),
        (COMPLETIONS, b'{"model": "autoglm-phone-9b", "prompt": "x", "temperature": NaN}', "temperature", "got nan"),
        (COMPLETIONS, json.dumps({"model": SERVED}).encode(), "prompt", "Field required"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": ""}).encode(), "prompt", "must not be empty"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": ["a", "b"]}).encode(), "prompt", "one prompt per request"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": [1, 10**8]}).encode(), "prompt[1]", "outside the vocab"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": "x", "n": 3}).encode(), "n", "only n=1"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": "x", "echo": True}).encode(), "echo", "not served"),
        (COMPLETIONS, json.dumps({"model": SERVED, "prompt": "x", "best_of": 2}).encode(), "best_of", "best_of=1"),
    ],
)  # fmt: skip
def test_bad_bodies_are_400_naming_the_field(
    http: httpx2.Client, path: str, body: bytes, param: str, says: str
) -> None:
    error = _error(http.post(path, content=body), 400)
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    assert says in error["message"]


def test_an_unknown_route_is_a_404_json_body(http: httpx2.Client) -> None:
    for method, path in [("POST", "/v1/embeddings"), ("GET", "/v1/nothing"), ("GET", "/")]:
        error = _error(http.request(method, path), 404)
        assert error["message"] == f"{method} {path}: Not Found"


def test_the_wrong_method_is_a_405_json_body(http: httpx2.Client) -> None:
    for method, path in [("GET", CHAT), ("GET", COMPLETIONS), ("POST", "/v1/models"), ("DELETE", "/health")]:
        error = _error(http.request(method, path), 405)
        assert error["message"] == f"{method} {path}: Method Not Allowed"


def test_after_all_that_the_server_still_serves(http: httpx2.Client) -> None:
    response = http.post(CHAT, content=_chat(max_tokens=2, ignore_eos=True))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2
    # OpenAI's shape, on the wire: the cached share of the prompt is nested, and 0 here (no prefix cache).
    assert response.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
