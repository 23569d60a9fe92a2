"""What a prefix holds, read with ListObjectsV2 only (no GET): files, sizes, ETags, the manifest.

The snapshot id is a digest of every (path, size, ETag): when any object in the bucket changes, the
id changes, and the cache fetches a new snapshot instead of reusing the old one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from autoglm_server.model_source.client import S3Client, classify
from autoglm_server.model_source.errors import IncompleteModel, IntegrityError, SourceNotFound
from autoglm_server.model_source.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, ManifestEntry, parse_manifest
from autoglm_server.model_source.uri import S3Uri, relative_key

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
STREAMED_SUFFIX = ".safetensors"  # the only weights format vLLM's Run:ai streamer reads
SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    key: str
    path: PurePosixPath
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class Listing:
    uri: S3Uri
    files: tuple[RemoteFile, ...]  # the files to fetch into the cache (the manifest object not among them)
    manifest_file: RemoteFile | None = None
    manifest: dict[PurePosixPath, ManifestEntry] | None = field(default=None)
    streamed: tuple[RemoteFile, ...] = ()  # weights vLLM's streamer reads from the bucket (--s3-weights stream)

    @property
    def total_bytes(self) -> int:
        """The bytes the cache holds for this listing (streamed weights stay in the bucket)."""
        return sum(f.size for f in self.files)

    @property
    def model_files(self) -> tuple[RemoteFile, ...]:
        return (*self.files, *self.streamed)

    @property
    def snapshot_id(self) -> str:
        """A digest of every object's path, size and ETag, the manifest's included.

        Streamed weights count too (new weights in the bucket make a new snapshot, whose manifest is
        read again), marked so that a streamed snapshot never passes for a complete one.
        """
        digest = hashlib.sha256()
        every = [*self.files, *([self.manifest_file] if self.manifest_file else [])]
        for f in sorted(every, key=lambda f: f.key):
            digest.update(f"{f.path}\t{f.size}\t{f.etag}\n".encode())
        for f in sorted(self.streamed, key=lambda f: f.key):
            digest.update(f"streamed\t{f.path}\t{f.size}\t{f.etag}\n".encode())
        return digest.hexdigest()[:20]

    def streaming(self) -> Listing:
        """This listing with its safetensors left in the bucket for vLLM's streamer; the rest is fetched."""
        weights = tuple(f for f in self.model_files if f.path.name.endswith(STREAMED_SUFFIX))
        rest = tuple(f for f in self.model_files if f not in weights)
        return Listing(self.uri, rest, self.manifest_file, self.manifest, weights)


def list_prefix(client: S3Client, uri: S3Uri) -> list[RemoteFile]:
    """Every object below the prefix; SourceNotFound when the bucket is unknown or the prefix empty."""
    contents: list[dict[str, object]] = []
    try:
        pages = client.raw.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=uri.list_prefix)
        for page in pages:
            contents.extend(page.get("Contents", []))
    except Exception as exc:
        raise classify(exc, where=f"bucket {uri.bucket!r} at {client.endpoint}") from None
    files: list[RemoteFile] = []
    for item in contents:
        key, size = str(item["Key"]), int(str(item["Size"]))
        if key.endswith("/") and size == 0:
            continue  # a "folder" marker some tools write
        files.append(RemoteFile(key, relative_key(uri, key), size, str(item["ETag"]).strip('"')))
    if not files:
        raise SourceNotFound(f"{uri} holds no objects (unknown or empty prefix) at {client.endpoint}")
    return files


def read_listing(client: S3Client, uri: S3Uri) -> Listing:
    """The prefix's objects, from the listing alone (no GET): enough to recognise a cached snapshot."""
    files = list_prefix(client, uri)
    manifest = next((f for f in files if str(f.path) == MANIFEST_NAME), None)
    return Listing(uri, tuple(f for f in files if f is not manifest), manifest)


def with_manifest(client: S3Client, listing: Listing) -> Listing:
    """The listing with its manifest read (one small GET) and checked to describe a whole model."""
    manifest = None if listing.manifest_file is None else _read_manifest(client, listing.uri, listing.manifest_file)
    complete = Listing(listing.uri, listing.files, listing.manifest_file, manifest, listing.streamed)
    check_complete(complete)
    return complete


def _read_manifest(client: S3Client, uri: S3Uri, f: RemoteFile) -> dict[PurePosixPath, ManifestEntry]:
    where = f"s3://{uri.bucket}/{f.key}"
    if f.size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"the manifest {where} is {f.size} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        body = client.raw.get_object(Bucket=uri.bucket, Key=f.key, IfMatch=f'"{f.etag}"')["Body"].read()
    except Exception as exc:
        raise classify(exc, where=where) from None
    return parse_manifest(body, where=where)


def check_complete(listing: Listing) -> None:
    """IncompleteModel naming what a loader would miss; IntegrityError for files the manifest disowns."""
    paths = {f.path for f in listing.model_files}
    where = str(listing.uri)
    if PurePosixPath("config.json") not in paths:
        raise IncompleteModel(f"{where} has no config.json: not a model directory")
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in paths):
        raise IncompleteModel(f"{where} has no weights file (*.safetensors, *.bin)")
    if listing.manifest is not None:
        missing = sorted(str(p) for p in listing.manifest if p not in paths)
        if missing:
            raise IncompleteModel(f"{where} lacks files its manifest lists: {', '.join(missing[:5])}")
        extra = sorted(str(p) for p in paths if p not in listing.manifest)
        if extra:
            raise IntegrityError(f"{where} holds files its manifest does not list: {', '.join(extra[:5])}")
        for f in listing.model_files:
            listed = listing.manifest[f.path].size
            if f.size != listed:
                raise IntegrityError(f"s3://{listing.uri.bucket}/{f.key} is {f.size} bytes, the manifest says {listed}")


def shards_named_by_index(index_bytes: bytes) -> set[str]:
    """The shard files a safetensors index names (checked once the index is downloaded)."""
    try:
        weight_map = json.loads(index_bytes)["weight_map"]
        return {str(v) for v in weight_map.values()}
    except (ValueError, KeyError, TypeError):
        return set()
