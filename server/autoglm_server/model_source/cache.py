"""The on-disk cache of s3:// models: one folder per source, complete snapshots only, a node-wide lock.

    <cache>/s3/<endpoint host>/<bucket>/<prefix>/
        .lock                     flock: one process fetches a source at a time, the others wait
        incoming/<snapshot>/      files being fetched: <file>.part (+ .part.json, the ranges done),
                                  renamed to <file> once whole and verified
        snapshots/<snapshot>/     a complete, verified model; appears by one rename of its incoming
                                  folder, with .autoglm-snapshot.json inside, so a loader never sees
                                  half of one

A snapshot is named by a digest of the listing (path, size, ETag of every object): new bucket content
means a new snapshot, never a silently reused old one. After a new snapshot lands, older snapshots and
stale incoming folders of that source are removed (under the lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from autoglm_server.model_source.errors import CacheError
from autoglm_server.model_source.listing import Listing
from autoglm_server.model_source.uri import S3Uri

log = logging.getLogger(__name__)

MARKER = ".autoglm-snapshot.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def endpoint_folder(endpoint: str) -> str:
    """A folder name for an endpoint URL: two servers with the same bucket name never share files."""
    host = endpoint.split("://", 1)[-1].rstrip("/")
    return _UNSAFE.sub("_", host) or "default"


class SourceCache:
    """The cache folder of one s3:// source."""

    def __init__(self, root: str | Path, endpoint: str, uri: S3Uri) -> None:
        base = Path(os.path.expanduser(str(root)))
        self.root = base / "s3" / endpoint_folder(endpoint) / uri.bucket
        if uri.prefix:
            self.root = self.root.joinpath(*uri.prefix.split("/"))
        self.uri = uri

    def snapshot_dir(self, snapshot: str) -> Path:
        return self.root / "snapshots" / snapshot

    def incoming_dir(self, snapshot: str) -> Path:
        return self.root / "incoming" / snapshot

    def prepare(self) -> None:
        """Create the folders, or CacheError naming the one that cannot be written."""
        for folder in (self.root / "snapshots", self.root / "incoming"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheError(f"cannot create the model cache folder {folder}: {exc.strerror}") from None
        try:  # a unique name: two fetches in one process (threads) must not unlink each other's probe
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-"):
                pass
        except OSError as exc:
            raise CacheError(f"the model cache folder {self.root} is not writable: {exc.strerror}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the source's lock; a second daemon on the node waits here while the first downloads."""
        path = self.root / ".lock"
        try:
            handle = path.open("a+b")
        except OSError as exc:
            raise CacheError(f"cannot open the cache lock {path}: {exc.strerror}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CacheError(f"cannot lock {path}: {exc.strerror}") from None
                log.info("another process is fetching %s into this cache; waiting for it", self.uri)
                started = time.monotonic()
                fcntl.flock(handle, fcntl.LOCK_EX)
                log.info("the other fetch of %s finished after %.1f s", self.uri, time.monotonic() - started)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def complete_snapshot(self, listing: Listing) -> Path | None:
        """The snapshot folder of this listing when it is whole (marker and every size right), else None."""
        folder = self.snapshot_dir(listing.snapshot_id)
        try:
            recorded = json.loads((folder / MARKER).read_text())
        except (OSError, ValueError):
            return None
        if recorded.get("snapshot") != listing.snapshot_id:
            return None
        for f in listing.files:
            path = folder.joinpath(*f.path.parts)
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            if size != f.size:
                log.warning("cached %s is damaged (%s): fetching the snapshot again", folder, f.path)
                shutil.rmtree(folder, ignore_errors=True)
                return None
        return folder

    def commit(self, listing: Listing, verified_by: list[str]) -> Path:
        """Make the incoming folder the visible snapshot in one rename."""
        snapshot = listing.snapshot_id
        incoming, final = self.incoming_dir(snapshot), self.snapshot_dir(snapshot)
        marker = {
            "snapshot": snapshot,
            "source": str(listing.uri),
            "files": {str(f.path): {"size": f.size, "etag": f.etag} for f in listing.files},
            "left_in_the_bucket": [str(f.path) for f in listing.streamed],  # --s3-weights stream
            "verified_by": verified_by,
            "fetched_at": int(time.time()),
        }
        try:
            (incoming / MARKER).write_text(json.dumps(marker, indent=1))
            _fsync_dir(incoming)
            if final.exists():  # a damaged copy that complete_snapshot() did not accept
                shutil.rmtree(final)
            os.rename(incoming, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise CacheError(f"cannot move the finished snapshot into {final}: {exc.strerror}") from None
        return final

    def prune(self, keep: str) -> None:
        """Remove other snapshots and stale incoming folders of this source (the lock is held)."""
        for parent in (self.root / "snapshots", self.root / "incoming"):
            with contextlib.suppress(OSError):
                for child in parent.iterdir():
                    if child.name != keep or parent.name == "incoming":
                        shutil.rmtree(child, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
