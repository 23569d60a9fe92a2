"""Acceptance on the vLLM engine: `serve --engine vllm --model s3://...` against a real SeaweedFS.

vLLM is handed the verified cache directory (never the URI or the keys). The second start uses keys
that may list but not read, so it proves the cache hit fetched nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

from openai import OpenAI

from autoglm_client import Client
from autoglm_server.model_source.cli import model_main
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.scrape import scrape
from tests.helpers.seaweedfs import ADMIN, LISTER, READER, SeaweedFS, running_seaweedfs
from tests.vllm.support import TEST_VLLM_ARGS

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

URI = "s3://models/llama/v1"


@pytest.fixture(scope="module")
def seaweedfs(llama_dir: Path) -> Iterator[SeaweedFS]:
    with running_seaweedfs() as server, pytest.MonkeyPatch.context() as monkeypatch:
        server.client(ADMIN).create_bucket(Bucket="models")
        for key, value in server.env(ADMIN).items():
            monkeypatch.setenv(key, value)
        assert model_main(["push", str(llama_dir), URI, "--s3-addressing-style", "path"]) == 0
        yield server


def _serve(server: SeaweedFS, keys: tuple[str, str], cache: Path) -> AbstractContextManager[Daemon]:
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    env = {**server.env(keys), "AUTOGLM_MODEL_CACHE_DIR": str(cache), "AUTOGLM_S3_ADDRESSING_STYLE": "path"}
    return running_daemon(
        "--engine", "vllm", "--model", URI, "--served-model-name", "llama", "--auth", "disabled", *vllm_args,
        env=env, timeout=600,
    )  # fmt: skip


def _answer(target: str, http_url: str) -> None:
    with Client(target, timeout=120) as client:
        assert len(client.generate_text("hello", max_new_tokens=4, ignore_eos=True).token_ids) == 4
    completion = OpenAI(base_url=http_url, api_key="none").completions.create(model="llama", prompt="hi", max_tokens=3)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_vllm_serves_from_s3_then_from_the_verified_cache(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    with _serve(seaweedfs, READER, tmp_path) as cold:
        _answer(cold.target, cold.http_url)
        assert scrape(cold.admin_url).value("autoglm_model_cache_hit") == 0
        assert "fetching snapshot" in cold.log()
    with _serve(seaweedfs, LISTER, tmp_path) as warm:
        _answer(warm.target, warm.http_url)
        assert "verified cache hit" in warm.log()
        assert scrape(warm.admin_url).value("autoglm_model_fetched_bytes") == 0


def test_vllm_streams_the_weights_from_the_bucket_with_s3_weights_stream(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    """--s3-weights stream: config and tokenizer come verified from the cache, the safetensors from the
    bucket through vLLM's Run:ai streamer (the cache never holds them), and the log says they go unchecked."""
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    env = {**seaweedfs.env(READER), "AUTOGLM_MODEL_CACHE_DIR": str(tmp_path), "AUTOGLM_S3_ADDRESSING_STYLE": "path"}
    args = ("--engine", "vllm", "--model", URI, "--served-model-name", "llama", "--auth", "disabled")
    with running_daemon(*args, "--s3-weights", "stream", *vllm_args, env=env, timeout=600) as streamed:
        _answer(streamed.target, streamed.http_url)
        assert "NOT checked against the manifest" in streamed.log()
        metrics = scrape(streamed.admin_url)
        assert metrics.value("autoglm_model_size_bytes") > 1_000_000 > metrics.value("autoglm_model_fetched_bytes") > 0
    cached = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert "config.json" in cached
    assert not [name for name in cached if name.endswith(".safetensors")], cached
