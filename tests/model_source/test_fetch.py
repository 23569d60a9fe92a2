"""`model push` then fetch against a real SeaweedFS: the manifest, the atomic snapshot, cache hits."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from autoglm_server.model_source.cli import model_main
from autoglm_server.model_source.errors import CredentialsError, IntegrityError
from autoglm_server.model_source.manifest import MANIFEST_NAME
from autoglm_server.model_source.resolve import ResolvedModel, resolve_model
from autoglm_server.model_source.settings import ModelSourceSettings
from tests.helpers.seaweedfs import LISTER, READER, SeaweedFS
from tests.model_source.conftest import BUCKET, push_release, set_s3_env


def settings(cache: Path, **overrides: Any) -> ModelSourceSettings:
    return ModelSourceSettings(model_cache_dir=str(cache), s3_addressing_style="path", **overrides)


def test_push_writes_a_manifest_of_every_file(admin: Any, release: str, tiny_model_dir: Path) -> None:
    manifest = json.loads(admin.get_object(Bucket=BUCKET, Key=f"tiny/v1/{MANIFEST_NAME}")["Body"].read())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    local = {p.name for p in tiny_model_dir.iterdir() if p.is_file()}
    assert set(listed) == local
    assert listed["model.safetensors"]["size"] == (tiny_model_dir / "model.safetensors").stat().st_size


def test_push_refuses_a_prefix_that_holds_a_release(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tiny_model_dir: Path, capsys: Any
) -> None:
    assert push_release(monkeypatch, seaweedfs, tiny_model_dir, release) == 64
    assert "already holds" in capsys.readouterr().err


def test_fetch_then_hit_without_reading_an_object(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    set_s3_env(monkeypatch, seaweedfs, READER)
    cold = resolve_model(release, settings(tmp_path, model_download_chunk_mib=2))
    assert not cold.cache_hit
    assert cold.fetched_bytes == cold.total_bytes > 10_000_000
    snapshot = Path(cold.path)
    assert snapshot.parent.name == "snapshots"
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    marker = json.loads((snapshot / ".autoglm-snapshot.json").read_text())
    assert "manifest-sha256" in marker["verified_by"]
    assert not list((snapshot.parent.parent / "incoming").iterdir())
    # The lister identity may list but not read: a second start that GETs anything would fail.
    set_s3_env(monkeypatch, seaweedfs, LISTER)
    warm = resolve_model(release, settings(tmp_path))
    assert warm.cache_hit
    assert (warm.path, warm.fetched_bytes) == (cold.path, 0)


def test_lister_keys_cannot_read_objects(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path, capsys: Any
) -> None:
    """The proof above holds only if the lister really cannot GET: a cold fetch with it is refused."""
    set_s3_env(monkeypatch, seaweedfs, LISTER)
    assert model_main(["fetch", release, "--model-cache-dir", str(tmp_path), "--s3-addressing-style", "path"]) == 77
    assert "refused the credentials" in capsys.readouterr().err


def test_changed_bucket_content_is_fetched_again_and_a_flipped_byte_is_caught(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, admin: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    uri = f"s3://{BUCKET}/tiny/flip"
    assert push_release(monkeypatch, seaweedfs, tiny_model_dir, uri) == 0
    set_s3_env(monkeypatch, seaweedfs, READER)
    first = resolve_model(uri, settings(tmp_path / "cache"))
    key = "tiny/flip/model.safetensors"
    data = bytearray(admin.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    admin.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))  # same size, new ETag, not in the manifest
    with pytest.raises(IntegrityError, match=r"model\.safetensors: sha256 .* does not match the manifest"):
        resolve_model(uri, settings(tmp_path / "cache"))
    incoming = Path(first.path).parent.parent / "incoming"
    assert not any(p.name == "model.safetensors" for p in incoming.rglob("*")), "the bad file is never kept"
    assert [p.name for p in Path(first.path).parent.iterdir()] == [Path(first.path).name]


def test_two_fetches_at_once_download_once(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path
) -> None:
    set_s3_env(monkeypatch, seaweedfs, READER)
    results: list[ResolvedModel] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_model(release, settings(tmp_path)))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2
    assert sorted(r.cache_hit for r in results) == [False, True]
    assert results[0].path == results[1].path
    assert sum(r.fetched_bytes for r in results) == results[0].total_bytes


def test_keys_from_a_vault_kv_secret(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, release: str, tmp_path: Path
) -> None:
    """--s3-vault-kv-path: the keys come from Vault KV v2 (real OpenBao), the AWS variables are unset."""
    from autoglm_server.auth.settings import VaultSettings
    from tests.helpers.openbao import running_openbao

    set_s3_env(monkeypatch, seaweedfs, READER)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with running_openbao() as bao:
        import hvac

        hvac.Client(url=bao.addr, token=bao.root_token).secrets.kv.v2.create_or_update_secret(
            path="autoglm/s3", secret={"access_key_id": READER[0], "secret_access_key": READER[1]}, mount_point="secret"
        )
        vault = VaultSettings(vault_addr=bao.addr, vault_token=bao.root_token)
        resolved = resolve_model(release, settings(tmp_path, s3_vault_kv_path="secret/autoglm/s3"), vault)
        assert (Path(resolved.path) / "config.json").exists()
        with pytest.raises(CredentialsError, match="Vault has no secret at secret/autoglm/none-here"):
            resolve_model(release, settings(tmp_path, s3_vault_kv_path="secret/autoglm/none-here"), vault)
