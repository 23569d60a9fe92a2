"""`model push` then fetch against a real SeaweedFS: the manifest, the atomic snapshot, cache hits."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from autoglm_server.model_source.cache import SourceCache
from autoglm_server.model_source.cli import model_main
from autoglm_server.model_source.client import build_client
from autoglm_server.model_source.errors import CredentialsError, IntegrityError
from autoglm_server.model_source.listing import read_listing
from autoglm_server.model_source.manifest import MANIFEST_NAME
from autoglm_server.model_source.resolve import ResolvedModel, resolve_model
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.model_source.uri import parse_s3_uri
from tests.helpers.seaweedfs import LISTER, READER, SeaweedFS
from tests.model_source.conftest import BUCKET, push_release, set_s3_env


def settings(cache: Path, **overrides: Any) -> ModelSourceSettings:
    return ModelSourceSettings(model_cache_dir=str(cache), s3_addressing_style="path", **overrides)


def test_push_writes_a_manifest_of_every_file(admin: Any, release: str, tiny_model_dir: Path) -> None:
    manifest = json.loads(admin.get_object(Bucket=BUCKET, Key=f"tiny/v1/{MANIFEST_NAME}")["Body"].read())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    local = {p.name for p in tiny_model_dir.iterdir() if p.is_file()}
    assert set(listed) == local
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert listed["model.safetensors"]["size"] == len(weights)
    # Pushed in 5 MiB parts (the release fixture): each part's sha256 is listed for checks per range.
    part = listed["model.safetensors"]["part_size"]
    assert part == 5 * 1024 * 1024
    expected = [hashlib.sha256(weights[i : i + part]).hexdigest() for i in range(0, len(weights), part)]
    assert listed["model.safetensors"]["part_sha256"] == expected
    assert len(expected) > 1
    assert "part_size" not in listed["config.json"], "a file of one part is covered by its sha256"


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
    # The weights were checked part by part as they arrived (ranges of 5 MiB: the parts, not the 2 MiB
    # asked for); config.json, fetched in one range, against its sha256 the same way.
    assert {"manifest-sha256-parts", "manifest-sha256"} <= set(marker["verified_by"])
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
    # Caught by the part that holds the byte, while the range arrived.
    with pytest.raises(IntegrityError, match=r"model\.safetensors: sha256 \w+\.\.\. of bytes \d+-\d+ does not match"):
        resolve_model(uri, settings(tmp_path / "cache"))
    incoming = Path(first.path).parent.parent / "incoming"
    # Neither the file nor its .part and record: the bad part stopped the fetch and the file was deleted.
    kept = [p.name for p in incoming.rglob("model.safetensors*")]
    assert not kept, f"the bad file is never kept: {kept}"
    assert [p.name for p in Path(first.path).parent.iterdir()] == [Path(first.path).name]


def test_a_manifest_without_part_hashes_is_still_checked_whole(
    monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, admin: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Releases pushed before part hashes existed: the whole-file sha256 is computed and compared."""
    uri, prefix = f"s3://{BUCKET}/tiny/whole", "tiny/whole"
    assert push_release(monkeypatch, seaweedfs, tiny_model_dir, uri, "--model-download-chunk-mib", "2") == 0
    manifest = json.loads(admin.get_object(Bucket=BUCKET, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read())
    for entry in manifest["files"]:
        entry.pop("part_size", None)
        entry.pop("part_sha256", None)
    admin.put_object(Bucket=BUCKET, Key=f"{prefix}/{MANIFEST_NAME}", Body=json.dumps(manifest).encode())
    set_s3_env(monkeypatch, seaweedfs, READER)
    fetched = resolve_model(uri, settings(tmp_path / "cache", model_download_chunk_mib=2))
    marker = json.loads((Path(fetched.path) / ".autoglm-snapshot.json").read_text())
    assert "manifest-sha256" in marker["verified_by"]
    assert "manifest-sha256-parts" not in marker["verified_by"]

    key = f"{prefix}/model.safetensors"
    data = bytearray(admin.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[-10] ^= 0x01
    admin.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    # Caught by the whole-file hash (no byte range in the message).
    whole = r"model\.safetensors: sha256 [0-9a-f]{16}\.\.\. does not match the manifest's [0-9a-f]{16}\.\.\.;"
    with pytest.raises(IntegrityError, match=whole):
        resolve_model(uri, settings(tmp_path / "cache", model_download_chunk_mib=2))


def test_resumed_chunks_are_hashed_again_before_they_count(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: SeaweedFS,
    release: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A power loss can keep the record of fetched chunks and lose their bytes: zeros must not pass."""
    set_s3_env(monkeypatch, seaweedfs, READER)
    chosen = settings(tmp_path, model_download_chunk_mib=5)  # the release's parts: one part per range
    client = build_client(chosen)
    listing = read_listing(client, parse_s3_uri(release))
    weights = next(f for f in listing.files if f.path.name == "model.safetensors")
    incoming = SourceCache(tmp_path, client.endpoint, listing.uri).incoming_dir(listing.snapshot_id)
    incoming.mkdir(parents=True)
    (incoming / "model.safetensors.part").write_bytes(bytes(weights.size))
    chunk = 5 * 1024 * 1024
    record = {"etag": weights.etag, "chunk": chunk, "done": list(range(-(-weights.size // chunk)))}
    (incoming / "model.safetensors.part.json").write_text(json.dumps(record))

    resolved = resolve_model(release, chosen)
    assert (Path(resolved.path) / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    assert resolved.fetched_bytes >= weights.size, "every recorded chunk was fetched again"
    assert "no longer match the manifest" in caplog.text


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
