"""A request shaped like Open-AutoGLM's (phone_agent/model/client.py in zai-org/Open-AutoGLM), sent with
the openai SDK as it sends it, to the daemon on builtin:tiny (text only, auth on).

Each agent step is the system prompt plus a user message holding a full-resolution screenshot as a
PNG data URL and the step's text, with temperature 0, top_p 0.85, frequency_penalty 0.2,
max_tokens 3000, streamed. A model without vision must refuse the screenshot with a 400 that says
so; the same step without it must stream to its end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.helpers.daemon import Daemon
from tests.openai.conftest import Tokens
from tests.openai.support import SERVED, error_body, sdk
from tests.serving import image_samples as samples

# The agent's instructions, in the shape of Open-AutoGLM's (its own prompt is longer, and in Chinese).
SYSTEM_PROMPT = (
    "You are a phone-operating agent. Each turn you see the screen and the task; think, then answer with "
    'one action such as do(action="Tap", element=[500, 300]) or finish(message="...").'
)
SAMPLING: dict[str, Any] = {"max_tokens": 3000, "temperature": 0.0, "top_p": 0.85, "frequency_penalty": 0.2}


@pytest.fixture(scope="module")
def screenshot_url() -> str:
    data = samples.encode(samples.screenshot(1080, 2400), "PNG")
    assert data.startswith(samples.PNG_SIGNATURE)
    return samples.data_url(data, "image/png")


@pytest.fixture(scope="module")
def client(auth_daemon: Daemon, tokens: Tokens) -> Iterator[openai.OpenAI]:
    with sdk(auth_daemon, tokens.generate) as connected:
        yield connected


def _step_text() -> str:
    screen_info = json.dumps({"current_app": "System Home"}, ensure_ascii=False)
    return f"Open the Settings app and turn on Wi-Fi\n\n** Screen Info **\n\n{screen_info}"


def _messages(image_url: str | None) -> list[Any]:
    content: list[dict[str, Any]] = []
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    content.append({"type": "text", "text": _step_text()})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def test_a_screenshot_to_a_text_only_model_is_a_bad_request(client: openai.OpenAI, screenshot_url: str) -> None:
    assert len(screenshot_url) > 500_000  # a real full-resolution screenshot, as the agent sends it
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=SERVED, messages=_messages(screenshot_url), stream=True, **SAMPLING)
    assert caught.value.status_code == 400
    error = error_body(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[1].content[0]"
    assert error["message"] == "messages[1].content[0]: model builtin:tiny takes no images; send text only"


def test_the_same_step_without_its_screenshot_streams_to_the_end(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=SERVED, messages=_messages(None), stream=True, **SAMPLING)
    chunks = list(stream)  # the SDK stops at `data: [DONE]`; an error event would raise here
    assert chunks[0].choices[0].delta.role == "assistant"
    reasons = [chunk.choices[0].finish_reason for chunk in chunks]
    assert reasons[-1] in {"stop", "length"}
    assert set(reasons[:-1]) == {None}
    assert all(chunk.model == SERVED for chunk in chunks)
