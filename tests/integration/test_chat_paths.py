"""Chat through both front doors equals Generate on the rendered prompt, token for token (greedy).

The rendered prompt is computed here with the daemon's own renderer and template over the built-in
tokenizer (the same code the engine runs), then sent to Generate as token ids: if Chat rendered or
tokenized differently, or the HTTP door mapped a field differently, the tokens would differ.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from autoglm_client import Client
from autoglm_server.engine import builtin_models
from autoglm_server.engine.chat_template import BUILTIN_CHAT_TEMPLATE, ChatRenderer
from autoglm_server.engine.types import ChatMessage, TextPart
from tests.helpers.daemon import Daemon, running_daemon

CONVERSATION = [
    {"role": "system", "content": "You are a phone agent. Answer with one action."},
    {"role": "user", "content": "** Screen Info ** the home screen, apps: Settings, Maps"},
    {"role": "assistant", "content": 'do(action="Launch", app="Maps")'},
    {"role": "user", "content": "** Screen Info ** Maps is open"},
]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("--auth", "disabled") as running:
        yield running


def _rendered_ids() -> list[int]:
    renderer = ChatRenderer(builtin_models.build_tokenizer(), BUILTIN_CHAT_TEMPLATE)
    messages = [ChatMessage(role=m["role"], content=(TextPart(m["content"]),)) for m in CONVERSATION]  # type: ignore[arg-type]
    return list(renderer.render(messages, builtin_models.BUILTIN_TINY).token_ids)


def test_greedy_chat_equals_generate_on_the_rendered_prompt(daemon: Daemon) -> None:
    prompt_ids = _rendered_ids()
    with Client(daemon.target, timeout=60) as client:
        chat = client.chat_text(CONVERSATION, max_new_tokens=NEW_TOKENS, ignore_eos=True)
        generate = client.generate_text(prompt_ids, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert chat.usage.prompt_tokens == len(prompt_ids)
    assert list(chat.token_ids) == list(generate.token_ids)
    assert len(chat.token_ids) == NEW_TOKENS
    assert chat.text == generate.text


def test_http_chat_equals_grpc_chat(daemon: Daemon) -> None:
    with Client(daemon.target, timeout=60) as client:
        grpc_reply = client.chat_text(CONVERSATION, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    openai = OpenAI(base_url=daemon.http_url, api_key="unused", max_retries=0)
    try:
        reply = openai.chat.completions.create(
            model="builtin:tiny",
            messages=CONVERSATION,  # type: ignore[arg-type]
            max_tokens=NEW_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        streamed = openai.chat.completions.create(
            model="builtin:tiny",
            messages=CONVERSATION,  # type: ignore[arg-type]
            max_tokens=NEW_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = list(streamed)
    finally:
        openai.close()
    assert reply.choices[0].message.content == grpc_reply.text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (grpc_reply.usage.prompt_tokens, NEW_TOKENS)
    # Both doors report the prefix cache's share: the HTTP call repeats the gRPC call's conversation,
    # so the cache served all of it but the last token, in whole blocks of 32 (the gRPC call may have
    # been this conversation's first request, with an explicit 0, or not, in this module).
    assert reply.usage.prompt_tokens_details is not None
    cached = (reply.usage.prompt_tokens - 1) // 32 * 32
    assert grpc_reply.usage.cached_prompt_tokens in (0, cached)
    assert reply.usage.prompt_tokens_details.cached_tokens == cached > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == grpc_reply.text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == NEW_TOKENS
    assert chunks[-1].usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == cached
