"""--s3-weights stream, checked without a server: where it is refused, what the streamer is told, and
how a streamed listing differs from a cached one. tests/vllm/test_vllm_s3.py streams from SeaweedFS."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import PurePosixPath

import pytest

from autoglm_server.model_source.errors import StreamingUnsupported
from autoglm_server.model_source.listing import Listing, RemoteFile, check_complete
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.model_source.streaming import check_streaming, streamer_environment, streaming_vllm_args
from autoglm_server.model_source.uri import parse_s3_uri

URI = "s3://models/m/v1"
STREAM = ModelSourceSettings(s3_weights="stream")


def remote(name: str, size: int = 10, etag: str = "e1") -> RemoteFile:
    return RemoteFile(f"m/v1/{name}", PurePosixPath(name), size, etag)


@pytest.mark.parametrize(
    ("model", "engine", "settings", "reason"),
    [
        ("builtin:tiny", "vllm", STREAM, "applies to s3:// models"),
        (URI, "builtin", STREAM, "needs --engine vllm"),
        (URI, "vllm", ModelSourceSettings(s3_weights="stream", s3_vault_kv_path="kv/s3"), "AWS chain only"),
    ],
)
def test_streaming_is_refused_where_it_cannot_work(
    model: str, engine: str, settings: ModelSourceSettings, reason: str
) -> None:
    with pytest.raises(StreamingUnsupported, match=reason) as caught:
        check_streaming(model, engine, settings)
    assert caught.value.exit_code == 78


def test_the_cache_needs_no_check_and_a_missing_streamer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    check_streaming("builtin:tiny", "builtin", ModelSourceSettings())  # the default: nothing to refuse
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(StreamingUnsupported, match=r"pip install 'autoglm-server\[vllm\]'"):
        check_streaming(URI, "vllm", STREAM)


def test_the_streamer_points_where_the_daemon_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio:9000")
    env = streamer_environment(ModelSourceSettings(s3_weights="stream", s3_addressing_style="path"))
    assert env == {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "RUNAI_STREAMER_S3_ENDPOINT": "http://minio:9000",
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
    }
    explicit = ModelSourceSettings(s3_endpoint_url="https://s3.example", s3_region="eu-west-1")
    assert streamer_environment(explicit)["RUNAI_STREAMER_S3_ENDPOINT"] == "https://s3.example"
    assert streamer_environment(explicit)["AWS_REGION"] == "eu-west-1"
    assert not any("SECRET" in key or "ACCESS_KEY" in key for key in streamer_environment(explicit))
    assert streaming_vllm_args(URI) == ["load_format=runai_streamer", f"model_weights={URI}"]


def test_a_streamed_listing_fetches_all_but_the_safetensors_and_is_its_own_snapshot() -> None:
    files = (
        remote("config.json"),
        remote("tokenizer.json"),
        remote("model-1.safetensors", 500),
        remote("model-2.safetensors", 500),
    )
    cached = Listing(parse_s3_uri(URI), files)
    streamed = cached.streaming()
    assert [f.path.name for f in streamed.files] == ["config.json", "tokenizer.json"]
    assert [f.path.name for f in streamed.streamed] == ["model-1.safetensors", "model-2.safetensors"]
    assert streamed.total_bytes == 20
    assert streamed.snapshot_id != cached.snapshot_id, "a folder without weights never passes for a whole model"
    check_complete(streamed)  # the weights count as present: they are in the bucket
    changed = Listing(parse_s3_uri(URI), (*files[:3], remote("model-2.safetensors", 500, "e2"))).streaming()
    assert changed.snapshot_id != streamed.snapshot_id, "new weights in the bucket make a new snapshot"


def test_serve_refuses_streaming_on_the_builtin_engine_before_touching_s3() -> None:
    command = [sys.executable, "-m", "autoglm_server", "serve", "--auth", "disabled", "--model", URI]
    result = subprocess.run(
        [*command, "--s3-weights", "stream"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 78, result.stderr
    assert "--s3-weights stream needs --engine vllm" in result.stderr
    assert "Traceback" not in result.stderr
