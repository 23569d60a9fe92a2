"""Client.chat and AsyncClient.chat against a real gRPC server: the wire request, typed events, sessions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import pytest
from PIL import Image

from autoglm_client import (
    AsyncClient,
    Chunk,
    Client,
    Finished,
    FinishReason,
    ImagePart,
    InvalidArgumentError,
    Message,
    Started,
)
from autoglm_client._metadata import SESSION_HEADER
from autoglm_client.v1 import generation_pb2 as pb
from tests.client.scripted_server import MODEL_ID, ScriptedServer


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_chat_streams_typed_events_and_sends_the_conversation(scripted: ScriptedServer) -> None:
    png = _png()
    messages = [Message("system", "S"), Message("user", [ImagePart.from_bytes(png), "AB"])]
    with Client(scripted.target, timeout=10) as client:
        events = list(
            client.chat(messages, max_new_tokens=3, presence_penalty=0.5, frequency_penalty=0.2, request_id="c-1")
        )
    # The scripted prompt is the bytes of "S" + "AB" = 83, 65, 66: tokens continue from 66.
    assert events[0] == Started(request_id="c-1", prompt_tokens=3, model_id=MODEL_ID)
    assert [e.token_ids for e in events[1:-1] if isinstance(e, Chunk)] == [(67,), (68,), (69,)]
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason is FinishReason.LENGTH
    request = scripted.recorder.chat_requests[-1]
    assert [m.role for m in request.messages] == [pb.CHAT_ROLE_SYSTEM, pb.CHAT_ROLE_USER]
    image = request.messages[1].content[0].image
    assert (image.data, image.mime_type) == (png, "image/png")
    assert request.messages[1].content[1].text == "AB"
    assert request.sampling.presence_penalty == 0.5
    assert request.sampling.frequency_penalty == pytest.approx(0.2)
    assert request.max_new_tokens == 3


def test_chat_text_takes_openai_dicts(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10) as client:
        result = client.chat_text([{"role": "user", "content": "A"}], max_new_tokens=2, logprobs=True)
    assert (result.text, result.token_ids, result.usage.prompt_tokens) == ("66 67 ", (66, 67), 1)
    assert [lp.logprob for lp in result.logprobs] == [-0.5, -0.5]


def test_bad_messages_fail_before_anything_is_sent(scripted: ScriptedServer) -> None:
    before = len(scripted.recorder.metadata)
    with Client(scripted.target, timeout=10) as client:
        with pytest.raises(TypeError, match="list of Message values"):
            client.chat("hello")  # type: ignore[arg-type]  # the mistake under test
        with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\]"):
            client.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}])
    assert len(scripted.recorder.metadata) == before


def test_a_server_error_on_chat_is_typed(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10) as client, pytest.raises(InvalidArgumentError, match="max_new_tokens"):
        client.chat_text([{"role": "user", "content": "invalid"}])


def test_the_session_goes_with_every_call_and_a_call_may_override_it(scripted: ScriptedServer) -> None:
    seen = scripted.recorder.metadata
    with Client(scripted.target, timeout=10, session_id="agent-1") as client:
        assert client.session_id == "agent-1"
        client.chat_text([{"role": "user", "content": "A"}], max_new_tokens=1)
        assert seen[-1][SESSION_HEADER] == "agent-1"
        client.generate_text([1], max_new_tokens=1)
        assert seen[-1][SESSION_HEADER] == "agent-1"
        client.tokenize("x")
        assert seen[-1][SESSION_HEADER] == "agent-1"
        client.chat_text([{"role": "user", "content": "A"}], max_new_tokens=1, session_id="agent-2")
        assert seen[-1][SESSION_HEADER] == "agent-2"
        client.generate_text([1], max_new_tokens=1, session_id=None)  # this call names no session
        assert SESSION_HEADER not in seen[-1]
    with Client(scripted.target, timeout=10) as client:
        client.generate_text([1], max_new_tokens=1)
        assert SESSION_HEADER not in seen[-1]
        client.generate_text([1], max_new_tokens=1, session_id="late")
        assert seen[-1][SESSION_HEADER] == "late"


def test_a_bad_session_id_is_refused_before_sending(scripted: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="session_id"):
        Client(scripted.target, session_id="has space")
    before = len(scripted.recorder.metadata)
    with Client(scripted.target, timeout=10) as client, pytest.raises(ValueError, match="session_id"):
        client.chat([{"role": "user", "content": "A"}], session_id="é")
    assert len(scripted.recorder.metadata) == before


async def test_async_chat_streams_with_its_session(scripted: ScriptedServer) -> None:
    async with AsyncClient(scripted.target, timeout=10, session_id="agent-9") as client:
        events = [e async for e in client.chat([Message("user", "A")], max_new_tokens=2)]
        assert isinstance(events[0], Started)
        assert [e.text for e in events if isinstance(e, Chunk)] == ["66 ", "67 "]
        assert scripted.recorder.metadata[-1][SESSION_HEADER] == "agent-9"
        result = await client.chat_text([{"role": "user", "content": "B"}], max_new_tokens=1, session_id="other")
        assert result.token_ids == (67,)
        assert scripted.recorder.metadata[-1][SESSION_HEADER] == "other"
        info = await client.model_info()
    assert (info.supports_chat, info.supports_images, info.max_images_per_request) == (True, True, 4)


def test_closing_a_chat_stream_early_cancels_the_call(slow_scripted: ScriptedServer) -> None:
    with Client(slow_scripted.target, timeout=10) as client:
        stream = client.chat([Message("user", "A")], max_new_tokens=500)
        for item in stream:
            if isinstance(item, Chunk):
                break
        stream.close()
        deadline = time.monotonic() + 5
        while slow_scripted.recorder.cancelled != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert slow_scripted.recorder.cancelled == 1


async def test_async_chat_early_exit_with_aclosing_cancels(slow_scripted: ScriptedServer) -> None:
    async with AsyncClient(slow_scripted.target, timeout=10) as client:
        async with contextlib.aclosing(client.chat([Message("user", "A")], max_new_tokens=500)) as stream:
            async for item in stream:
                if isinstance(item, Chunk):
                    break
        for _ in range(250):
            if slow_scripted.recorder.cancelled == 1:
                break
            await asyncio.sleep(0.02)
        assert slow_scripted.recorder.cancelled == 1
