"""The official openai SDK (sync and async) against the real daemon on builtin:tiny with auth on.

Tokens are JWTs minted through a real OpenBao's transit key and sent as the SDK's `api_key`. Usage
counts are checked against the gRPC front door of the same daemon: the prompt as the gRPC Tokenize
and Chat (Started) count it, the completion exactly max_tokens (ignore_eos).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from autoglm_client import Client, Started, StaticToken
from tests.auth.local_keys import LocalKey, claims
from tests.helpers.daemon import Daemon
from tests.openai.conftest import Tokens
from tests.openai.support import KEY, SERVED, async_sdk, error_body, root_url, sdk

SYSTEM = "You are a phone agent."
USER = "Open settings"
MESSAGES: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
# What the built-in template renders for MESSAGES (engine/chat_template.py), BOS added by Tokenize.
RENDERED = f"<|system|>\n{SYSTEM}\n<|user|>\n{USER}\n<|assistant|>\n"
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def grpc_client(auth_daemon: Daemon, tokens: Tokens) -> Iterator[Client]:
    with Client(auth_daemon.target, token_provider=StaticToken(tokens.generate), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def client(auth_daemon: Daemon, tokens: Tokens) -> Iterator[openai.OpenAI]:
    with sdk(auth_daemon, tokens.generate) as connected:
        yield connected


# --- models and auth ---------------------------------------------------------------------------------------


def test_models_list_needs_the_models_read_scope(auth_daemon: Daemon, tokens: Tokens) -> None:
    with sdk(auth_daemon, tokens.models_read) as reader:
        page = reader.models.list()
    assert [model.id for model in page.data] == [SERVED]
    assert page.data[0].object == "model"
    assert (page.data[0].model_extra or {})["root"] == "builtin:tiny"
    with sdk(auth_daemon, tokens.generate) as generator, pytest.raises(openai.PermissionDeniedError) as caught:
        generator.models.list()
    assert caught.value.status_code == 403
    assert error_body(caught.value)["type"] == "permission_error"
    assert "models:read" in error_body(caught.value)["message"]


def _forged() -> str:
    """A well-formed ES256 JWT naming the daemon's real kid, signed by a key Vault never held."""
    return LocalKey.generate(f"{KEY}:v1").sign(claims(scope="generate models:read"))


@pytest.mark.parametrize("key", ["none", "garbage", "forged"])
def test_no_key_or_a_bad_one_is_authentication_error(auth_daemon: Daemon, key: str) -> None:
    # "none": the SDK sends no Authorization header at all (the header explicitly omitted).
    headers: dict[str, Any] = {"Authorization": openai.Omit()} if key == "none" else {}
    api_key = {"none": "unused", "garbage": "not-a-jwt", "forged": _forged()}[key]
    with sdk(auth_daemon, api_key) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.models.list(extra_headers=headers),
            lambda: client.chat.completions.create(model=SERVED, messages=MESSAGES, extra_headers=headers),
            lambda: client.completions.create(model=SERVED, prompt="hi", stream=True, extra_headers=headers),
        ]
        for call in calls:
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            assert caught.value.status_code == 401
            assert caught.value.response.headers["www-authenticate"] == "Bearer"
            assert error_body(caught.value)["type"] == "authentication_error"


def test_health_answers_without_a_token(auth_daemon: Daemon) -> None:
    with urllib.request.urlopen(f"{root_url(auth_daemon)}/health", timeout=10) as response:
        assert response.status == 200
        assert response.read() == b'{"status":"ready"}'


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    assert caught.value.status_code == 404
    assert error_body(caught.value)["param"] == "model"
    assert error_body(caught.value)["code"] == "model_not_found"
    assert SERVED in error_body(caught.value)["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2, stream=True)


def test_the_model_id_is_also_accepted(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="builtin:tiny", prompt="hi", max_tokens=2, extra_body=IGNORE_EOS)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2
    assert reply.model == "builtin:tiny"  # echoed as sent


# --- chat completions --------------------------------------------------------------------------------------------


def _grpc_chat_prompt_tokens(grpc_client: Client) -> int:
    (started, *_) = list(grpc_client.chat(MESSAGES, max_new_tokens=1))
    assert isinstance(started, Started)
    return started.prompt_tokens


def test_chat_usage_counts_the_rendered_prompt_and_max_tokens(client: openai.OpenAI, grpc_client: Client) -> None:
    reply = client.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=12, extra_body=IGNORE_EOS)
    prompt_tokens = len(grpc_client.tokenize(RENDERED, add_special_tokens=True))
    assert prompt_tokens == _grpc_chat_prompt_tokens(grpc_client)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 12)
    assert reply.usage.total_tokens == prompt_tokens + 12
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0  # this prompt's first request: an explicit 0
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == SERVED
    (choice,) = reply.choices
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    # Greedy on the same engine: the gRPC Chat of the same messages says the same thing.
    assert choice.message.content == grpc_client.chat_text(MESSAGES, max_new_tokens=12, ignore_eos=True).text


def test_chat_stream_matches_the_whole_reply_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=10, extra_body=IGNORE_EOS)
    stream = client.chat.completions.create(
        model=SERVED,
        messages=MESSAGES,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=IGNORE_EOS,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == SERVED for chunk in chunks)
    # The usage chunk is the last one, with no choices; none before it carries usage.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert whole.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (whole.usage.prompt_tokens, 10)
    assert last.usage.prompt_tokens_details is not None
    # The same prompt again: the prefix cache served it but its last token, in whole blocks of 32.
    assert last.usage.prompt_tokens_details.cached_tokens == (whole.usage.prompt_tokens - 1) // 32 * 32 > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])
    reasons = [chunk.choices[0].finish_reason for chunk in chunks[:-1]]
    assert reasons[-1] == "length"
    assert set(reasons[:-1]) == {None}
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:-1]) == whole.choices[0].message.content


def test_chat_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=4, stream=True, extra_body=IGNORE_EOS
        )
    )
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_async_chat_stream_and_whole(auth_daemon: Daemon, tokens: Tokens) -> None:
    async with async_sdk(auth_daemon, tokens.generate) as client:
        whole = await client.chat.completions.create(
            model=SERVED, messages=MESSAGES, max_tokens=8, extra_body=IGNORE_EOS
        )
        stream = await client.chat.completions.create(
            model=SERVED,
            messages=MESSAGES,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=IGNORE_EOS,
        )
        chunks = [chunk async for chunk in stream]
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 8
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content


# --- completions -------------------------------------------------------------------------------------------------


def test_completion_usage_and_text_match_grpc_generate(client: openai.OpenAI, grpc_client: Client) -> None:
    prompt = "hello world"
    reply = client.completions.create(model=SERVED, prompt=prompt, max_tokens=9, extra_body=IGNORE_EOS)
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    assert reply.usage is not None
    prompt_tokens = len(grpc_client.tokenize(prompt, add_special_tokens=True))
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 9)
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    (choice,) = reply.choices
    assert choice.finish_reason == "length"
    assert choice.text == grpc_client.generate_text(prompt, max_new_tokens=9, ignore_eos=True).text


def test_completion_stream_with_usage(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=SERVED, prompt="hello world", max_tokens=6, extra_body=IGNORE_EOS)
    chunks = list(
        client.completions.create(
            model=SERVED,
            prompt="hello world",
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=IGNORE_EOS,
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert chunks[-1].usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 0
    assert chunks[-2].choices[0].finish_reason == "length"
    assert "".join(chunk.choices[0].text for chunk in chunks[:-1]) == whole.choices[0].text


async def test_async_completions_with_token_ids_prompt(auth_daemon: Daemon, tokens: Tokens) -> None:
    async with async_sdk(auth_daemon, tokens.generate) as client:
        reply = await client.completions.create(model=SERVED, prompt=[5, 6, 7, 8], max_tokens=5, extra_body=IGNORE_EOS)
        stream = await client.completions.create(
            model=SERVED, prompt=[5, 6, 7, 8], max_tokens=5, stream=True, extra_body=IGNORE_EOS
        )
        text = "".join([chunk.choices[0].text async for chunk in stream])
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 5)
    assert text == reply.choices[0].text


def test_models_without_a_token_is_401_while_health_is_open(auth_daemon: Daemon) -> None:
    # /health answers without a token (test above); /v1/models does not: only health is open.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{auth_daemon.http_url}/models", timeout=10)
    assert caught.value.code == 401
    caught.value.close()


def test_a_stop_string_ends_the_reply_with_finish_reason_stop(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=SERVED, messages=MESSAGES, max_tokens=24, extra_body=IGNORE_EOS)
    text = whole.choices[0].message.content or ""
    # Greedy, so the same call says the same again: stop it at two characters it first says at `at`
    # (whole characters: the random model's output holds U+FFFD for bytes that are not UTF-8).
    at = next(i for i in range(3, len(text) - 1) if "\ufffd" not in text[i : i + 2] and text.find(text[i : i + 2]) == i)
    stopped = client.chat.completions.create(
        model=SERVED, messages=MESSAGES, max_tokens=24, stop=[text[at : at + 2]], extra_body=IGNORE_EOS
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[:at]
    assert stopped.usage is not None
    assert stopped.usage.completion_tokens < 24


def test_the_request_id_header_names_the_completion(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=SERVED, messages=MESSAGES, max_tokens=2)
    assert raw.parse().id == f"chatcmpl-{raw.headers['x-request-id']}"


def test_two_authorization_headers_are_refused(auth_daemon: Daemon, tokens: Tokens) -> None:
    bearer = f"Bearer {tokens.generate}"
    with httpx2.Client(timeout=30) as http:
        response = http.get(f"{auth_daemon.http_url}/models", headers=[("authorization", bearer)] * 2)
    assert response.status_code == 401
    assert "more than one Authorization header" in response.json()["error"]["message"]
