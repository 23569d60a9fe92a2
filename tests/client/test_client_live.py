"""The SDK and the `autoglm` command line against the real daemon (builtin:tiny on 127.0.0.1:0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from autoglm_client import (
    AsyncClient,
    Chunk,
    Client,
    Finished,
    FinishReason,
    HealthStatus,
    InvalidArgumentError,
    Started,
)
from autoglm_client._convert import GenerateKwargs
from tests.helpers.daemon import Daemon, running_daemon

AUTOGLM = str(Path(sys.executable).with_name("autoglm"))


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


def test_sync_stream_and_generate_text_agree(client: Client) -> None:
    events = list(client.generate("hello", max_new_tokens=24, ignore_eos=True, seed=1, temperature=0.8))
    assert isinstance(events[0], Started)
    assert events[0].model_id == "builtin:tiny"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason is FinishReason.LENGTH
    chunks = [e for e in events if isinstance(e, Chunk)]
    ids = tuple(i for c in chunks for i in c.token_ids)
    assert len(ids) == finished.usage.completion_tokens == 24
    again = client.generate_text("hello", max_new_tokens=24, ignore_eos=True, seed=1, temperature=0.8)
    assert again.token_ids == ids
    assert again.text == "".join(c.text for c in chunks)
    assert again.request_id != events[0].request_id
    # The same prompt twice, but shorter than one block of the prefix cache (32 tokens): neither run
    # reports cached tokens.
    assert finished.usage.cached_prompt_tokens == again.usage.cached_prompt_tokens == 0


async def test_async_stream(daemon: Daemon) -> None:
    async with AsyncClient(daemon.target, timeout=60) as client:
        events = [e async for e in client.generate([104, 105], max_new_tokens=8, ignore_eos=True)]
        assert isinstance(events[0], Started)
        assert events[0].prompt_tokens == 2
        assert sum(len(e.token_ids) for e in events if isinstance(e, Chunk)) == 8
        result = await client.generate_text([104, 105], max_new_tokens=8, ignore_eos=True)
        assert result.usage.completion_tokens == 8
        assert (await client.model_info()).model_id == "builtin:tiny"
        assert await client.health("autoglm.v1.GenerationService") is HealthStatus.SERVING


def test_tokenize_info_health(client: Client) -> None:
    info = client.model_info()
    assert info.model_id == "builtin:tiny"
    assert info.vocab_size > 0
    assert any("meaningless" in w for w in info.warnings)
    ids = client.tokenize("hé")
    assert len(ids) >= 2
    assert all(0 <= i < info.vocab_size for i in ids)
    assert client.health() is HealthStatus.SERVING
    assert client.health("autoglm.v1.GenerationService") is HealthStatus.SERVING
    assert client.health("no.such.Service") is HealthStatus.SERVICE_UNKNOWN


@pytest.mark.parametrize(
    ("prompt", "kwargs", "field"),
    [
        ("hi", {"max_new_tokens": 0}, "max_new_tokens"),
        ("hi", {"top_p": 2.0}, "top_p"),
        ("hi", {"temperature": -1.0}, "temperature"),
        ("", {}, "text"),
        ([10**6], {}, "token_ids"),
    ],
)
def test_bad_requests_raise_invalid_argument(
    client: Client, prompt: str | list[int], kwargs: GenerateKwargs, field: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=field) as raised:
        client.generate_text(prompt, **kwargs)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_cli_generate_streams_32_tokens(daemon: Daemon) -> None:
    done = subprocess.run(
        [AUTOGLM, "generate", "hello", "--target", daemon.target, "--max-new-tokens", "32", "--ignore-eos"],
        capture_output=True,
        env=_cli_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert b"finish_reason=length" in done.stderr
    assert b"completion_tokens=32" in done.stderr
    assert done.stdout  # the (meaningless) text itself


def test_cli_generate_json_and_info(daemon: Daemon) -> None:
    done = subprocess.run(
        [AUTOGLM, "generate", "hi", "--target", daemon.target, "--max-new-tokens", "5", "--ignore-eos", "--json"],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "started"
    assert lines[-1]["usage"]["completion_tokens"] == 5
    info = subprocess.run(
        [AUTOGLM, "info", "--target", daemon.target], capture_output=True, text=True, env=_cli_env(), timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert "model_id: builtin:tiny" in info.stdout


def test_cli_error_is_one_line(daemon: Daemon) -> None:
    done = subprocess.run(
        [AUTOGLM, "generate", "hi", "--target", daemon.target, "--top-p", "5"],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("autoglm: INVALID_ARGUMENT: ")
    assert "top_p" in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_cli_bench_writes_figures(daemon: Daemon, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    argv = [AUTOGLM, "bench", "--target", daemon.target, "--concurrency", "4", "--requests", "8"]
    argv += ["--prompt-tokens", "4:12", "--max-new-tokens", "8", "--seed", "1", "--json", str(report)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(report.read_text())
    assert document["completed"] == 8
    assert document["errors"] == {}
    assert document["generated_tokens"] == 64  # ignore_eos: every output has exactly 8 tokens
    assert document["tokens_per_s"] > 0
    assert document["ttft_ms"]["p50"] > 0
    assert "8/8 requests" in done.stderr  # the progress line


_WITHOUT_TORCH = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "autoglm_server"}:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
from autoglm_client import Client

with Client(sys.argv[1], timeout=60) as client:
    result = client.generate_text("hello", max_new_tokens=6, ignore_eos=True)
print(result.usage.completion_tokens, result.finish_reason)
"""


def test_sdk_without_torch_talks_to_the_daemon(daemon: Daemon) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WITHOUT_TORCH), daemon.target],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6 length"
