"""`--model s3://...` -> a verified local directory: the one entry point of model sources.

    list the prefix (no GET)  ->  lock the source's cache  ->  a complete snapshot for this listing?
        yes: a cache hit, no object is read
        no:  read the manifest, check the model is whole (config, weights), HEAD each file (its S3
             checksum), fetch what is missing, verify, rename the snapshot in

Anything that is not an s3:// URI (builtin:*, a local directory, a hub id) passes through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autoglm_server.auth.settings import VaultSettings
from autoglm_server.model_source.cache import SourceCache
from autoglm_server.model_source.client import S3Client, build_client, classify
from autoglm_server.model_source.download import Downloader, DownloadPlan
from autoglm_server.model_source.errors import IncompleteModel
from autoglm_server.model_source.listing import (
    SAFETENSORS_INDEX,
    Listing,
    RemoteFile,
    read_listing,
    shards_named_by_index,
    with_manifest,
)
from autoglm_server.model_source.progress import MIB, Progress
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.model_source.uri import is_s3_uri, parse_s3_uri
from autoglm_server.model_source.verify import Expected, checksum_from_head

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What the engines load (`path`) and what the metrics and the log say about getting it."""

    path: str
    source: str
    snapshot: str = ""
    cache_hit: bool = True
    total_bytes: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0
    weights_uri: str = ""  # --s3-weights stream: vLLM streams the safetensors from here, not from `path`

    @property
    def remote(self) -> bool:
        return bool(self.snapshot)


def resolve_model(model: str, settings: ModelSourceSettings, vault: VaultSettings | None = None) -> ResolvedModel:
    """The local directory to load `model` from; an s3:// source is fetched and verified first."""
    if not is_s3_uri(model):
        return ResolvedModel(path=model, source=model)
    started = time.monotonic()
    uri = parse_s3_uri(model)
    client = build_client(settings, vault)
    listing = read_listing(client, uri)
    if settings.s3_weights == "stream":
        listing = listing.streaming()
        if not listing.streamed:
            raise IncompleteModel(f"{uri} has no *.safetensors: --s3-weights stream reads safetensors only")
    cache = SourceCache(settings.model_cache_dir, client.endpoint, uri)
    cache.prepare()
    with cache.locked():
        hit = cache.complete_snapshot(listing)
        if hit is not None:
            log.info(
                "model %s: verified cache hit, snapshot %s (%d files, %.1f MiB; listing matches, no download)",
                uri, listing.snapshot_id, len(listing.files), listing.total_bytes / MIB,
            )  # fmt: skip
            return _resolved(hit, listing, True, 0, started)
        listing = with_manifest(client, listing)
        log.info(
            "model %s: fetching snapshot %s (%d files, %.1f MiB) into %s",
            uri, listing.snapshot_id, len(listing.files), listing.total_bytes / MIB, cache.root,
        )  # fmt: skip
        progress = Progress(str(uri), listing.total_bytes)
        folder = cache.incoming_dir(listing.snapshot_id)
        plan = DownloadPlan(
            bucket=uri.bucket,
            chunk_bytes=settings.model_download_chunk_mib * MIB,
            concurrency=settings.model_download_concurrency,
            retries=settings.model_download_retries,
        )
        expectations = _expectations(client, listing, plan.concurrency)
        checks = Downloader(client, plan, folder, progress).run(expectations)
        _check_index(folder, listing)
        path = cache.commit(listing, sorted({c for file_checks in checks.values() for c in file_checks}))
        cache.prune(keep=listing.snapshot_id)
    elapsed = time.monotonic() - started
    log.info(
        "model %s: snapshot %s complete and verified: %.1f MiB fetched in %.1f s (%.1f MiB/s)",
        uri, listing.snapshot_id, progress.fetched / MIB, elapsed, progress.fetched / MIB / max(elapsed, 1e-9),
    )  # fmt: skip
    return _resolved(path, listing, False, progress.fetched, started)


def _resolved(path: Path, listing: Listing, hit: bool, fetched: int, started: float) -> ResolvedModel:
    return ResolvedModel(
        path=str(path),
        source=str(listing.uri),
        snapshot=listing.snapshot_id,
        cache_hit=hit,
        total_bytes=sum(f.size for f in listing.model_files),
        fetched_bytes=fetched,
        seconds=time.monotonic() - started,
        weights_uri=str(listing.uri) if listing.streamed else "",
    )


def _expectations(client: S3Client, listing: Listing, concurrency: int) -> list[tuple[RemoteFile, Expected]]:
    """Each file with what it must match: its size, its S3 checksum (HEAD), its manifest hashes.

    The HEADs go out in parallel: a model of a dozen files over a network with 20 ms round trips
    would otherwise wait a quarter of a second before its first byte.
    """

    def expect(f: RemoteFile) -> tuple[RemoteFile, Expected]:
        where = f"s3://{listing.uri.bucket}/{f.key}"
        try:
            head = client.raw.head_object(Bucket=listing.uri.bucket, Key=f.key, ChecksumMode="ENABLED")
        except Exception as exc:
            raise classify(exc, where=where) from None
        entry = listing.manifest.get(f.path) if listing.manifest is not None else None
        if entry is None:
            return f, Expected(where, f.size, checksum=checksum_from_head(head))
        return f, Expected(where, f.size, entry.sha256, checksum_from_head(head), entry.parts)

    with ThreadPoolExecutor(max(1, min(concurrency, len(listing.files))), thread_name_prefix="autoglm-head") as pool:
        return list(pool.map(expect, listing.files))


def _check_index(folder: Path, listing: Listing) -> None:
    """A sharded checkpoint's index must name only shards that were fetched."""
    index = folder / SAFETENSORS_INDEX
    if not index.exists():
        return
    present = {str(f.path) for f in listing.model_files}
    missing = sorted(s for s in shards_named_by_index(index.read_bytes()) if s not in present)
    if missing:
        names = ", ".join(missing[:5])
        raise IncompleteModel(f"{listing.uri} lacks weight shards its {SAFETENSORS_INDEX} names: {names}")


def describe(resolved: ResolvedModel) -> str:
    return json.dumps(
        {
            "path": resolved.path,
            "source": resolved.source,
            "snapshot": resolved.snapshot,
            "cache_hit": resolved.cache_hit,
            "total_bytes": resolved.total_bytes,
            "fetched_bytes": resolved.fetched_bytes,
            "seconds": round(resolved.seconds, 3),
            "weights_streamed_from": resolved.weights_uri or None,
        }
    )
