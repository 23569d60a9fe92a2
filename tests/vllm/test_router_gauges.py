"""The router's gauges on the vLLM engine: a daemon with --engine vllm over the tiny Llama.

The same contract as tests/routing/test_router_gauges.py (the built-in engine), read from the HTTP
port's /metrics: one series each with TYPE gauge, waiting and running above 0 while a burst queues
behind one batch row and back at 0 after it, the KV fraction in [0, 1]; and, since vLLM has a paged
KV cache, `vllm:cache_config_info` with its block size and block count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

from openai import OpenAI

from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.router_gauges import RouterGauges, read_router_gauges
from tests.vllm.support import TEST_VLLM_ARGS

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

LONG = 1800  # the tiny Llama's context is 2,048 tokens; the streams are closed, never waited for
BURST = 3


@pytest.fixture(scope="module")
def daemon(llama_dir: Path) -> Iterator[Daemon]:
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    args = ["--engine", "vllm", "--model", str(llama_dir), "--auth", "disabled", "--dtype", "bfloat16"]
    args += ["--max-running", "1", "--max-waiting", "4", "--max-new-tokens-limit", str(LONG), *vllm_args]
    with running_daemon(*args, timeout=600) as running:
        yield running


def _root(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.http_port}"


def _until(daemon: Daemon, check: Callable[[RouterGauges], bool], what: str, timeout: float = 120) -> RouterGauges:
    deadline = time.monotonic() + timeout
    while True:
        gauges = read_router_gauges(_root(daemon))
        if check(gauges):
            return gauges
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen in {timeout} s: {what} (last: {gauges})")
        time.sleep(0.05)


def test_cache_config_info_names_the_block_geometry(daemon: Daemon) -> None:
    gauges = read_router_gauges(_root(daemon))
    assert gauges.cache_config is not None
    assert int(gauges.cache_config["block_size"]) > 0
    assert int(gauges.cache_config["num_gpu_blocks"]) > 0
    assert (gauges.waiting, gauges.running) == (0, 0)
    assert 0 <= gauges.kv_usage <= 1


def test_a_burst_moves_the_gauges_and_they_return_to_zero(daemon: Daemon) -> None:
    client = OpenAI(base_url=daemon.http_url, api_key="unused", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    stop = threading.Event()
    errors: list[BaseException] = []

    def stream_until_stopped() -> None:
        try:
            with client.completions.create(
                model=model, prompt="Open the settings app.", max_tokens=LONG, stream=True,
                extra_body={"ignore_eos": True},
            ) as stream:  # fmt: skip
                for _ in stream:
                    if stop.is_set():
                        return
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=stream_until_stopped, daemon=True) for _ in range(BURST)]
    try:
        for thread in threads:
            thread.start()
        busy = _until(daemon, lambda g: g.running > 0 and g.waiting > 0, "running > 0 and waiting > 0")
        assert busy.running == 1
        assert 0 < busy.kv_usage <= 1
        assert read_router_gauges(daemon.admin_url).running == 1  # the admin port serves them too
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
        client.close()
    idle = _until(daemon, lambda g: g.running == 0 and g.waiting == 0, "running and waiting back at 0")
    assert 0 <= idle.kv_usage <= 1
    assert errors == []
