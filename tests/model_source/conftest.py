"""One real SeaweedFS for the whole model-source suite, a tiny real model, and a release pushed once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_server.model_source.cli import model_main
from tests.helpers.seaweedfs import ADMIN, SeaweedFS

BUCKET = "models"
RELEASE = f"s3://{BUCKET}/tiny/v1"


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """Started once per test session (about 4 s), stopped by pid at the end."""
    server = SeaweedFS()
    server.start()
    try:
        admin = admin_client(server)
        admin.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def admin_client(server: SeaweedFS) -> Any:
    return server.client(ADMIN)


@pytest.fixture
def admin(seaweedfs: SeaweedFS) -> Any:
    return admin_client(seaweedfs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:tiny saved as a Hugging Face model directory (random weights, ~14 MB of safetensors)."""
    from autoglm_server.engine import builtin_models

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = builtin_models.build_tokenizer()
    builtin_models.build_model(tokenizer, "builtin:tiny").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def set_s3_env(monkeypatch: pytest.MonkeyPatch, server: SeaweedFS, keys: tuple[str, str]) -> None:
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env(keys).items():
        monkeypatch.setenv(key, value)


def push_release(monkeypatch: pytest.MonkeyPatch, server: SeaweedFS, folder: Path, uri: str, *extra: str) -> int:
    set_s3_env(monkeypatch, server, ADMIN)
    return model_main(["push", str(folder), uri, "--s3-addressing-style", "path", *extra])


@pytest.fixture(scope="session")
def release(seaweedfs: SeaweedFS, tiny_model_dir: Path) -> str:
    """The tiny model pushed once with `model push` (multipart, manifest) as s3://models/tiny/v1."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert push_release(monkeypatch, seaweedfs, tiny_model_dir, RELEASE, "--model-download-chunk-mib", "5") == 0
    return RELEASE
