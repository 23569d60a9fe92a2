"""Chat through the SDK and `autoglm chat` against the real daemon (builtin:tiny on 127.0.0.1:0).

builtin:tiny has a simple chat template and no vision, so text chat streams and any image gets
INVALID_ARGUMENT saying the model takes none.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from autoglm_client import AsyncClient, Chunk, Client, Finished, FinishReason, ImagePart, InvalidArgumentError, Started
from tests.helpers.daemon import Daemon, running_daemon

AUTOGLM = str(Path(sys.executable).with_name("autoglm"))
SYSTEM = {"role": "system", "content": "You are a phone agent."}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("--auth", "disabled") as running:
        yield running


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.target, timeout=60) as connected:
        yield connected


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AUTOGLM_")}


def _png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_model_info_says_chat_without_images(client: Client) -> None:
    info = client.model_info()
    assert info.model_id == "builtin:tiny"
    assert info.supports_chat is True
    assert info.supports_images is False
    assert info.max_images_per_request == 0


def test_chat_streams_and_chat_text_agrees(client: Client) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Open settings"}]
    events = list(client.chat(messages, max_new_tokens=16, ignore_eos=True))
    assert isinstance(events[0], Started)
    assert events[0].model_id == "builtin:tiny"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason is FinishReason.LENGTH
    ids = tuple(i for e in events if isinstance(e, Chunk) for i in e.token_ids)
    assert len(ids) == finished.usage.completion_tokens == 16
    # The template wraps the messages: the rendered prompt is longer than their text alone.
    text_only = len(client.tokenize("You are a phone agent.")) + len(client.tokenize("Open settings"))
    assert events[0].prompt_tokens > text_only
    again = client.chat_text(messages, max_new_tokens=16, ignore_eos=True)  # greedy: the same tokens
    assert again.token_ids == ids
    assert again.text == "".join(e.text for e in events if isinstance(e, Chunk))


def test_penalties_are_accepted_and_checked(client: Client) -> None:
    messages = [{"role": "user", "content": "hello"}]
    result = client.chat_text(messages, max_new_tokens=8, ignore_eos=True, presence_penalty=1.0, frequency_penalty=0.5)
    assert result.usage.completion_tokens == 8
    assert client.generate_text("hello", max_new_tokens=4, ignore_eos=True, frequency_penalty=-2.0).token_ids
    with pytest.raises(InvalidArgumentError, match="presence_penalty"):
        client.chat_text(messages, presence_penalty=5.0)
    with pytest.raises(InvalidArgumentError, match="frequency_penalty"):
        client.generate_text("hello", frequency_penalty=-3.0)


def test_an_image_to_a_text_only_model_is_invalid_argument(client: Client) -> None:
    step = [
        SYSTEM,
        {"role": "user", "content": [ImagePart.from_bytes(_png((108, 240))), "** Screen Info **"]},
    ]
    with pytest.raises(InvalidArgumentError, match=r"messages\[1\]\.content\[0\].*takes no images"):
        client.chat_text(step, max_new_tokens=8, temperature=0.0, top_p=0.85, frequency_penalty=0.2)
    # The same step without its screenshot streams.
    text_only = [SYSTEM, {"role": "user", "content": "** Screen Info **"}]
    assert client.chat_text(text_only, max_new_tokens=4, ignore_eos=True).usage.completion_tokens == 4


def test_an_empty_conversation_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match=r"messages.*at least one message"):
        client.chat_text([])


def _access_lines(daemon: Daemon) -> list[dict[str, object]]:
    lines = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_async_chat_and_the_session_reaches_the_access_log(daemon: Daemon) -> None:
    async with AsyncClient(daemon.target, timeout=60, session_id="agent-live-1") as client:
        events = [e async for e in client.chat([{"role": "user", "content": "hi"}], max_new_tokens=4, ignore_eos=True)]
        assert sum(len(e.token_ids) for e in events if isinstance(e, Chunk)) == 4
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(
            line.get("session_id") == "agent-live-1" and str(line.get("grpc_method", "")).endswith("/Chat")
            for line in _access_lines(daemon)
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no access-log line of a Chat with session agent-live-1 in:\n{daemon.log()[-4000:]}")


def test_cli_chat_streams(daemon: Daemon) -> None:
    argv = [AUTOGLM, "chat", "hello", "--system", "Be brief.", "--target", daemon.target]
    argv += ["--max-new-tokens", "12", "--ignore-eos", "--session", "cli-1"]
    done = subprocess.run(argv, capture_output=True, env=_cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"finish_reason=length" in done.stderr
    assert b"completion_tokens=12" in done.stderr
    assert done.stdout


def test_cli_chat_with_an_image_fails_in_one_line(daemon: Daemon, tmp_path: Path) -> None:
    image = tmp_path / "screen.png"
    image.write_bytes(_png())
    done = subprocess.run(
        [AUTOGLM, "chat", "what is on screen?", "--image", str(image), "--target", daemon.target],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("autoglm: INVALID_ARGUMENT: ")
    assert "takes no images" in done.stderr
    assert done.stderr.count("\n") == 1


def test_cli_info_shows_chat_support(daemon: Daemon) -> None:
    info = subprocess.run(
        [AUTOGLM, "info", "--target", daemon.target], capture_output=True, text=True, env=_cli_env(), timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert "supports_chat: True" in info.stdout
    assert "supports_images: False" in info.stdout
