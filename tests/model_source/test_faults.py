"""Every fault of an s3:// source against a real SeaweedFS: its message, its exit code, nothing partial."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoglm_server.model_source.cli import model_main
from autoglm_server.model_source.errors import SourceUnavailable
from autoglm_server.model_source.resolve import ResolvedModel, resolve_model
from autoglm_server.model_source.settings import ModelSourceSettings
from tests.helpers.seaweedfs import READER, SeaweedFS
from tests.helpers.tcp_delay_proxy import TcpDelayProxy
from tests.model_source.conftest import BUCKET, set_s3_env


def fetch(uri: str, cache: Path, *extra: str) -> int:
    return model_main(["fetch", uri, "--model-cache-dir", str(cache), "--s3-addressing-style", "path", *extra])


def put(admin: Any, key: str, body: bytes) -> None:
    admin.put_object(Bucket=BUCKET, Key=key, Body=body)


def test_wrong_keys_exit_77_and_never_echo_the_secret(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path, capsys: Any
) -> None:
    secret = "wrong-secret-5d1f0e3a"
    set_s3_env(monkeypatch, seaweedfs, (READER[0], secret))
    assert fetch(release, tmp_path) == 77
    err = capsys.readouterr().err
    assert "refused the credentials" in err
    assert "SignatureDoesNotMatch" in err
    assert secret not in err


def test_no_credentials_exit_77(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path, capsys: Any
) -> None:
    set_s3_env(monkeypatch, seaweedfs, READER)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert fetch(release, tmp_path) == 77
    assert "no S3 credentials" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://no-such-bucket/tiny/v1", "does not exist: NoSuchBucket"),
        (f"s3://{BUCKET}/no/such/prefix", "holds no objects"),
        (f"s3://{BUCKET}/empty", "holds no objects"),  # only a folder marker lies there
    ],
)
def test_unknown_bucket_or_prefix_exit_66(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: SeaweedFS,
    admin: Any,
    tmp_path: Path,
    capsys: Any,
    uri: str,
    message: str,
) -> None:
    put(admin, "empty/", b"")
    set_s3_env(monkeypatch, seaweedfs, READER)
    assert fetch(uri, tmp_path) == 66
    err = capsys.readouterr().err
    assert message in err
    assert uri.split("/")[2] in err  # the bucket is named


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"model.safetensors": b"x" * 10}, "has no config.json"),
        ({"config.json": b"{}", "tokenizer.json": b"{}"}, "has no weights file"),
    ],
)
def test_missing_config_or_weights_exit_72_before_any_download(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: SeaweedFS,
    admin: Any,
    tmp_path: Path,
    capsys: Any,
    files: dict[str, bytes],
    message: str,
) -> None:
    prefix = f"partial-{len(files)}-{next(iter(files))}"
    for name, body in files.items():
        put(admin, f"{prefix}/{name}", body)
    set_s3_env(monkeypatch, seaweedfs, READER)
    assert fetch(f"s3://{BUCKET}/{prefix}", tmp_path) == 72
    assert message in capsys.readouterr().err
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_a_corrupted_object_exits_65_naming_the_file(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, admin: Any, tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    from tests.model_source.conftest import push_release

    uri = f"s3://{BUCKET}/tiny/corrupt"
    assert push_release(monkeypatch, seaweedfs, tiny_model_dir, uri) == 0
    config = bytearray(admin.get_object(Bucket=BUCKET, Key="tiny/corrupt/config.json")["Body"].read())
    config[-3] ^= 0x20  # content changed after the manifest was written, size kept
    put(admin, "tiny/corrupt/config.json", bytes(config))
    set_s3_env(monkeypatch, seaweedfs, READER)
    assert fetch(uri, tmp_path) == 65
    assert "s3://models/tiny/corrupt/config.json: sha256" in capsys.readouterr().err
    assert not list(tmp_path.rglob("snapshots/*"))


def test_unwritable_cache_exits_73(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path, capsys: Any
) -> None:
    # The tests run as root, whom file modes do not stop: a path below a regular file cannot be created.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    set_s3_env(monkeypatch, seaweedfs, READER)
    assert fetch(release, blocker / "cache") == 73
    assert f"cannot create the model cache folder {blocker}/cache" in capsys.readouterr().err


@pytest.mark.parametrize(
    "uri",
    ["s3://models/tiny/../../etc", "s3://models//abs", "s3://models/tiny/./v1", "s3://AKIAX:hunter2@models/tiny"],
)
def test_uris_that_would_escape_or_carry_secrets_exit_64(uri: str, tmp_path: Path, capsys: Any) -> None:
    assert fetch(uri, tmp_path) == 64
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert not list(tmp_path.iterdir())


def _watch_then_kill(cache: Path, seaweedfs: SeaweedFS, killed: threading.Event) -> None:
    """Kill the server once a few chunks of the big file are recorded, well before the last."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for state in cache.rglob("weights.safetensors.part.json"):
            try:
                if len(json.loads(state.read_text())["done"]) >= 2:
                    seaweedfs.kill()
                    killed.set()
                    return
            except (ValueError, OSError):
                pass
        time.sleep(0.005)


def test_server_killed_mid_download_fails_cleanly_then_resumes(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, admin: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="autoglm_server.model_source")
    body = os.urandom(16 * 1024 * 1024)
    put(admin, "big/v1/config.json", b'{"model_type": "llama"}')
    put(admin, "big/v1/weights.safetensors", body)
    set_s3_env(monkeypatch, seaweedfs, READER)
    proxy = TcpDelayProxy("127.0.0.1", seaweedfs.ports["s3.port"])
    proxy.start()
    try:
        proxy.forward(delay_s=0.01)  # ~6 MB/s per connection: the kill lands mid-file
        settings = ModelSourceSettings(
            model_cache_dir=str(tmp_path),
            s3_endpoint_url=proxy.addr,
            s3_addressing_style="path",
            model_download_chunk_mib=1,
            model_download_concurrency=2,
            model_download_retries=2,
        )
        killed = threading.Event()
        watcher = threading.Thread(target=_watch_then_kill, args=(tmp_path, seaweedfs, killed))
        watcher.start()
        try:
            with pytest.raises(SourceUnavailable, match=r"s3://models/big/v1/weights\.safetensors"):
                resolve_model(f"s3://{BUCKET}/big/v1", settings)
        finally:
            watcher.join(60)
            if not killed.is_set():
                seaweedfs.kill()
            seaweedfs.start()
        assert killed.is_set()
        assert "retry 1/2" in caplog.text
        assert not list(tmp_path.rglob("snapshots/*")), "nothing usable after a failed download"
        assert list(tmp_path.rglob("weights.safetensors.part"))
        proxy.forward(delay_s=0.0)
        resumed: ResolvedModel = resolve_model(f"s3://{BUCKET}/big/v1", settings)
    finally:
        proxy.stop()
    assert "resuming weights.safetensors" in caplog.text
    assert 0 < resumed.fetched_bytes < resumed.total_bytes
    assert (Path(resumed.path) / "weights.safetensors").read_bytes() == body
