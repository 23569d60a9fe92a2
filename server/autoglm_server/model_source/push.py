"""`autoglm-server model push DIR s3://bucket/prefix`: publish a model directory as a verifiable release.

Every regular file below DIR (names starting with "." are skipped: caches, lock files) is hashed
(whole, and in parts of --model-download-chunk-mib for files larger than one part: see manifest.py),
then uploaded through s3transfer (multipart above --multipart-threshold, parts in parallel, each part
with a CRC32 the server checks). The manifest with every file's size and sha256 goes up last, so a
prefix with a manifest is a complete release. A prefix that already holds objects is refused unless
--replace is given: a release is immutable, a new fine-tune goes under a new prefix (v2, v3, ...).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from boto3.s3.transfer import TransferConfig

from autoglm_server.model_source.client import S3Client, classify
from autoglm_server.model_source.errors import IncompleteModel, InvalidModelUri, SourceNotFound
from autoglm_server.model_source.listing import list_prefix
from autoglm_server.model_source.manifest import MANIFEST_NAME, ManifestEntry, render_manifest
from autoglm_server.model_source.progress import MIB
from autoglm_server.model_source.uri import S3Uri, check_relative
from autoglm_server.model_source.verify import hash_file

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PushReport:
    files: int
    bytes: int
    seconds: float


def local_files(folder: Path) -> list[tuple[Path, PurePosixPath]]:
    """(file, its path in the release) for every regular file, sorted; hidden names skipped."""
    if not folder.is_dir():
        raise SourceNotFound(f"{folder} is not a directory")
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found.append((path, check_relative(relative.as_posix())))
    names = {str(p) for _, p in found}
    if "config.json" not in names:
        raise IncompleteModel(f"{folder} has no config.json: not a model directory")
    if MANIFEST_NAME in names:
        raise InvalidModelUri(f"{folder} already holds {MANIFEST_NAME}: push writes it itself")
    return found


def push(client: S3Client, folder: Path, uri: S3Uri, *, replace: bool, concurrency: int, chunk_mib: int) -> PushReport:
    started = time.monotonic()
    files = local_files(folder)
    if not replace:
        try:
            existing = list_prefix(client, uri)
        except SourceNotFound as exc:
            if "no objects" not in str(exc):
                raise
            existing = []
        if existing:
            raise InvalidModelUri(f"{uri} already holds {len(existing)} objects; push a new prefix or pass --replace")
    part_size = chunk_mib * MIB
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=concurrency)
    entries: list[ManifestEntry] = []
    total = 0
    for path, relative in files:
        size = os.path.getsize(path)
        whole, parts = hash_file(path, part_size)
        entries.append(ManifestEntry(relative, size, whole, parts))
        key = uri.key(str(relative))
        try:
            client.raw.upload_file(str(path), uri.bucket, key, Config=config, ExtraArgs={"ChecksumAlgorithm": "CRC32"})
        except Exception as exc:
            raise classify(exc, where=f"s3://{uri.bucket}/{key}") from None
        total += size
        log.info("pushed %s (%.1f MiB)", key, size / MIB)
    manifest_key = uri.key(MANIFEST_NAME)
    try:
        client.raw.put_object(
            Bucket=uri.bucket, Key=manifest_key, Body=render_manifest(entries), ChecksumAlgorithm="SHA256",
            ContentType="application/json",
        )  # fmt: skip
    except Exception as exc:
        raise classify(exc, where=f"s3://{uri.bucket}/{manifest_key}") from None
    return PushReport(len(entries), total, time.monotonic() - started)
