"""The daemon on builtin:glm4v-tiny (what `make serve` starts), driven as Open-AutoGLM drives it.

One Open-AutoGLM step through the openai SDK: system prompt, a full-resolution 1080x2400 PNG
screenshot as a data URL, temperature 0, top_p 0.85, frequency_penalty 0.2, streamed. The step is
accepted and streams to its end; the first chunk whose content is not None (the chunk Open-AutoGLM's
client times as the first token) carries the first generated token, and the role rides on it. Both
front doors say the model takes images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.helpers.daemon import Daemon, running_daemon
from tests.openai.support import sdk
from tests.serving import image_samples as samples

pytestmark = pytest.mark.timeout(300)

SYSTEM_PROMPT = (
    "You are a phone-operating agent. Each turn you see the screen and the task; think, then answer with "
    'one action such as do(action="Tap", element=[500, 300]) or finish(message="...").'
)
SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 0.85, "frequency_penalty": 0.2}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("--model", "builtin:glm4v-tiny", "--auth", "disabled") as running:
        yield running


def _messages() -> list[Any]:
    url = samples.data_url(samples.encode(samples.screenshot(1080, 2400), "PNG"), "image/png")
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Open Settings"}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def test_both_front_doors_say_it_takes_images(daemon: Daemon) -> None:
    with sdk(daemon, "unused") as client:
        (card,) = client.models.list().data
    assert card.id == "builtin:glm4v-tiny"
    assert card.model_extra is not None
    assert card.model_extra["input_modalities"] == ["text", "image"]
    with grpc.insecure_channel(daemon.target) as channel:
        info = pb_grpc.GenerationServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=30).model_info
    assert info.supports_images
    assert info.max_images_per_request > 0
    assert info.architecture == "Glm4vForConditionalGeneration"


def test_a_screenshot_step_streams_and_its_first_content_chunk_is_the_first_token(daemon: Daemon) -> None:
    with sdk(daemon, "unused") as client:
        stream = client.chat.completions.create(
            model="builtin:glm4v-tiny",
            messages=_messages(),
            stream=True,
            max_tokens=6,
            logprobs=True,
            stream_options={"include_usage": True},
            **SAMPLING,
        )
        chunks = list(stream)
    with_choices = [chunk for chunk in chunks if chunk.choices]
    # Open-AutoGLM's rule: the first chunk with non-null content is the first token.
    first = next(chunk for chunk in with_choices if chunk.choices[0].delta.content is not None)
    assert first is with_choices[0]
    assert first.choices[0].delta.role == "assistant"
    logprobs = first.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content
    assert with_choices[-1].choices[0].finish_reason in {"stop", "length"}
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens > 3000
    assert 1 <= usage.completion_tokens <= 6
