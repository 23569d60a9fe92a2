"""The daemon with --engine vllm over the tiny GLM-4.1V: both front doors, Open-AutoGLM's request, drain.

One daemon for the module (a vLLM start takes 40-60 s here); the last test stops it with SIGTERM.
"""

from __future__ import annotations

import base64
import io
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

import psutil
from openai import OpenAI
from PIL import Image

from autoglm_client import Client
from autoglm_client.types import Chunk, Finished, FinishReason, Started
from tests.helpers.daemon import Daemon, running_daemon
from tests.vllm.support import TEST_VLLM_ARGS, alive

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

# Open-AutoGLM's system prompt is ~2,500 characters of rules; a shorter stand-in of the same shape.
SYSTEM_PROMPT = "You are a phone-operating agent. Reply with do(action=...) or finish(message=...). " * 8


def screenshot_data_url() -> str:
    image = Image.new("RGB", (1080, 2400), (250, 250, 250))
    for row in range(0, 2400, 150):
        image.paste((20, 120, 220), (60, row + 30, 1020, row + 110))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def daemon(glm_dir: Path) -> Iterator[Daemon]:
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    with running_daemon(
        "--engine",
        "vllm",
        "--model",
        str(glm_dir),
        "--auth",
        "disabled",
        "--dtype",
        "bfloat16",
        "--max-running",
        "2",
        "--mm-processor-kwargs",
        '{"max_pixels": 5000000}',
        "--drain-timeout",
        "30",
        *vllm_args,
        timeout=600,
    ) as running:
        yield running


def test_grpc_generate_streams(daemon: Daemon) -> None:
    with Client(daemon.target, timeout=120) as client:
        events = list(client.generate("Open the settings app.", max_new_tokens=8, ignore_eos=True))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert sum(len(event.token_ids) for event in events if isinstance(event, Chunk)) == 8


def test_openai_sdk_streams_an_open_autoglm_request(daemon: Daemon) -> None:
    client = OpenAI(base_url=daemon.http_url, api_key="unused", timeout=300)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": screenshot_data_url()}},
                    {"type": "text", "text": "Task: open the settings app. What is the next action?"},
                ],
            },
        ],
        temperature=0.0,
        top_p=0.85,
        frequency_penalty=0.2,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    usage = next(chunk.usage for chunk in chunks if chunk.usage is not None)
    assert finishes == ["length"]
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens > 3000  # the screenshot's 3,108 image tokens are counted
    assert isinstance(text, str)


def test_sigterm_drains_and_leaves_no_vllm_process(daemon: Daemon) -> None:
    descendants = [child.pid for child in psutil.Process(daemon.process.pid).children(recursive=True)]
    assert any("VLLM::EngineCore" in " ".join(psutil.Process(pid).cmdline()) for pid in descendants)
    started = threading.Event()
    events: list[object] = []

    def stream_during_drain() -> None:
        with Client(daemon.target, timeout=120) as client:
            for event in client.generate("Keep going.", max_new_tokens=48, ignore_eos=True):
                events.append(event)
                started.set()

    worker = threading.Thread(target=stream_during_drain)
    worker.start()
    assert started.wait(120), "the stream did not start"
    daemon.signal(signal.SIGTERM)  # while the stream is in flight
    worker.join(120)
    assert daemon.wait(120) == 0
    assert isinstance(events[-1], Finished), "the in-flight stream was not drained to its end"
    assert sum(len(event.token_ids) for event in events if isinstance(event, Chunk)) == 48
    assert alive(descendants) == []
