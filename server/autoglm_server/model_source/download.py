"""Parallel ranged GETs into `.part` files: resumable, retried with backoff, renamed only when verified.

Every file is cut into chunks of --model-download-chunk-mib; one pool of --model-download-concurrency
threads fetches chunks of all files at once (a 9B model's few large shards keep every connection
busy). Each GET carries If-Match with the listed ETag, so an object replaced mid-download fails that
range instead of mixing two versions. A chunk's bytes are hashed against the manifest's part hashes
while they are in the thread's buffer (a file with part hashes is cut on their boundaries) and go
straight to their offset (pwrite); a chunk is recorded as done next to the part file only when every
part in it matched, so a restarted daemon fetches only what is missing (and hashes what it resumes
once more from disk: a record can outlive its data in a power loss). When a file's last chunk lands, what is left to
verify (sizes, whole-file hashes where no part hashes exist) is checked while the disk syncs it, then
the file is renamed from `.part` to its name. A file that fails a check is deleted, never kept.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from autoglm_server.model_source.client import S3Client, classify
from autoglm_server.model_source.errors import (
    CacheError,
    CredentialsError,
    IntegrityError,
    ModelSourceError,
    SourceNotFound,
)
from autoglm_server.model_source.listing import RemoteFile
from autoglm_server.model_source.manifest import PartHashes
from autoglm_server.model_source.progress import Progress
from autoglm_server.model_source.verify import Digests, Expected, RangeVerifier, range_hashes, verify_file

log = logging.getLogger(__name__)

_READ = 4 * 1024 * 1024
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 8.0


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    bucket: str
    chunk_bytes: int
    concurrency: int
    retries: int


@dataclass
class _FileState:
    remote: RemoteFile
    final: Path
    expected: Expected
    chunk_bytes: int  # the plan's, or a multiple of the manifest's part size
    chunks: int
    parts: PartHashes | None = None  # each range is checked against these as it arrives
    failed_check: bool = False  # a range did not match: the file is deleted once the others stop
    done: set[int] = field(default_factory=set)
    checks: list[str] = field(default_factory=list)
    digests: Digests | None = None
    hashed: int = 0  # chunks [0, hashed) are in `digests`: hashing follows the contiguous front
    hash_lock: threading.Lock = field(default_factory=threading.Lock)
    finishing: bool = False

    @property
    def part(self) -> Path:
        return self.final.with_name(self.final.name + ".part")

    @property
    def state(self) -> Path:
        return self.final.with_name(self.final.name + ".part.json")


class Downloader:
    """Fetches a listing's files into one folder; `run()` returns the checks each file passed."""

    def __init__(self, client: S3Client, plan: DownloadPlan, folder: Path, progress: Progress) -> None:
        self._client = client
        self._plan = plan
        self._folder = folder
        self._progress = progress
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._buffers = threading.local()
        self._syncer = ThreadPoolExecutor(plan.concurrency, thread_name_prefix="autoglm-fsync")

    def run(self, files: list[tuple[RemoteFile, Expected]]) -> dict[str, list[str]]:
        states = [self._open(remote, expected) for remote, expected in files]
        checks = {str(s.remote.path): ["size", "already-verified"] for s in states if s.chunks == 0}
        pending = [s for s in states if s.chunks > 0]
        tasks = [(s, i) for s in pending for i in range(s.chunks) if i not in s.done]
        try:
            for s in pending:  # files whose chunks were all fetched before a restart, not yet verified
                if len(s.done) == s.chunks:
                    self._finish(s)
            if tasks:
                self._fetch_all(tasks)
        finally:
            self._syncer.shutdown(wait=True)
            for s in pending:
                if s.failed_check:  # a bad file is never kept: the next start fetches it again
                    _discard(s)
        checks.update({str(s.remote.path): s.checks for s in pending})
        return checks

    def _fetch_all(self, tasks: list[tuple[_FileState, int]]) -> None:
        with ThreadPoolExecutor(self._plan.concurrency, thread_name_prefix="autoglm-fetch") as pool:
            futures: list[Future[None]] = [pool.submit(self._chunk, s, i) for s, i in tasks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._stop.set()
                for f in futures:
                    f.cancel()
                wait(futures)
                error = failed[0].exception()
                assert error is not None
                raise error

    def _open(self, remote: RemoteFile, expected: Expected) -> _FileState:
        final = self._folder.joinpath(*remote.path.parts)
        parts = range_hashes(expected, self._plan.chunk_bytes)
        # Ranges start on part boundaries, so that each one can be checked on its own.
        chunk = self._plan.chunk_bytes if parts is None else parts.size * max(1, self._plan.chunk_bytes // parts.size)
        digests = Digests(expected, manifest_sha256=parts is None)
        state = _FileState(
            remote, final, expected, chunk, chunks=max(1, -(-remote.size // chunk)), parts=parts, digests=digests
        )
        if final.exists() and final.stat().st_size == remote.size:
            state.chunks = 0  # renamed only after verification: done in an earlier run
            return state
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            state.done = self._resume(state)
            if state.done and parts is not None:
                state.done = self._recheck(state, parts)
            if not state.done:
                with state.part.open("wb") as handle:
                    handle.truncate(remote.size)
        except OSError as exc:
            raise CacheError(f"cannot write {state.part}: {exc.strerror}") from None
        if state.done:
            resumed = sum(min(chunk, remote.size - i * chunk) for i in state.done)
            log.info("resuming %s: %d of %d chunks already fetched", remote.path, len(state.done), state.chunks)
            self._progress.add_resumed(resumed)
        return state

    def _resume(self, state: _FileState) -> set[int]:
        try:
            recorded = json.loads(state.state.read_text())
            if (
                recorded["etag"] == state.remote.etag
                and recorded["chunk"] == state.chunk_bytes
                and state.part.stat().st_size == state.remote.size
            ):
                return {int(i) for i in recorded["done"] if 0 <= int(i) < state.chunks}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return set()

    def _recheck(self, state: _FileState, parts: PartHashes) -> set[int]:
        """The recorded chunks whose bytes on disk still match their part hashes.

        A record is written before the disk has the data (a power loss can leave the record and lose
        the bytes), and a record left by an older version was never checked per range; with part
        hashes nothing else would read these bytes again, so they are hashed here, once per resume.
        """
        good: set[int] = set()
        view = self._buffer()
        with state.part.open("rb", buffering=0) as handle:
            for index in sorted(state.done):
                start = index * state.chunk_bytes
                left = min(state.remote.size, start + state.chunk_bytes) - start
                verifier = RangeVerifier(parts, state.remote.size, start, state.expected.where)
                handle.seek(start)
                try:
                    while left > 0 and (got := handle.readinto(view[: min(len(view), left)])):
                        verifier.update(view[:got])
                        left -= got
                except IntegrityError:
                    left = -1
                if left == 0:
                    good.add(index)
        if len(good) < len(state.done):
            log.warning(
                "%s: %d of the %d chunks an earlier run recorded no longer match the manifest; fetching them again",
                state.remote.path, len(state.done) - len(good), len(state.done),
            )  # fmt: skip
        return good

    def _chunk(self, state: _FileState, index: int) -> None:
        start = index * state.chunk_bytes
        end = min(state.remote.size, start + state.chunk_bytes) - 1
        if end >= start:
            fetch = functools.partial(self._get_range, state, start, end)
            try:
                _with_retries(fetch, self._plan.retries, self._stop, state.expected.where)
            except IntegrityError:
                state.failed_check = True
                raise
        with self._lock:
            state.done.add(index)
            self._record(state)
        self._hash_front(state)
        with self._lock:
            complete = len(state.done) == state.chunks and not state.finishing
            state.finishing = state.finishing or complete
        if complete:
            self._finish(state)

    def _hash_front(self, state: _FileState) -> None:
        """Feed the file's digests the chunks that now follow the hashed front without a gap.

        One thread hashes a file at a time; a worker that finds the lock taken goes back to
        downloading, and the holder looks again for newly landed chunks before it lets go.
        """
        digests = state.digests
        if digests is None or not digests.needed:
            return
        while state.hash_lock.acquire(blocking=False):
            try:
                while state.hashed in state.done:
                    start = state.hashed * state.chunk_bytes
                    digests.update_from(state.part, start, min(state.remote.size, start + state.chunk_bytes))
                    state.hashed += 1
            finally:
                state.hash_lock.release()
            if state.hashed not in state.done:
                return

    def _get_range(self, state: _FileState, start: int, end: int) -> None:
        if self._stop.is_set():
            raise _Stopped()
        try:
            answer = self._client.raw.get_object(
                Bucket=self._plan.bucket,
                Key=state.remote.key,
                Range=f"bytes={start}-{end}",
                IfMatch=f'"{state.remote.etag}"',
            )
        except Exception as exc:
            raise classify(exc, where=state.expected.where) from exc
        body, offset, written = answer["Body"], start, 0
        buffer = self._buffer()
        parts = state.parts
        verifier = None if parts is None else RangeVerifier(parts, state.remote.size, start, state.expected.where)
        try:
            fd = os.open(state.part, os.O_WRONLY)
        except OSError as exc:
            raise CacheError(f"cannot write {state.part}: {exc.strerror}") from None
        try:
            while got := body.readinto(buffer):  # a broken connection raises here and is retried
                if verifier is not None:
                    # A part is judged once its last byte is hashed, before that byte is written; a
                    # bad part's earlier bytes may be on disk, but the range is never recorded and
                    # the file is discarded.
                    verifier.update(buffer[:got])
                try:
                    os.pwrite(fd, buffer[:got], offset)
                except OSError as exc:  # the disk, not the network: no retry helps
                    raise CacheError(f"cannot write {state.part}: {exc.strerror}") from None
                offset += got
                written += got
                self._progress.add(got)
        except BaseException:
            self._progress.add(-written)  # the retry fetches the range again from its start
            raise
        finally:
            os.close(fd)
            body.close()
        if written != end - start + 1:
            self._progress.add(-written)
            raise ConnectionError(f"range {start}-{end} of {state.expected.where} ended after {written} bytes")

    def _buffer(self) -> memoryview:
        """This worker thread's read buffer, reused for every range it fetches (no allocation per read)."""
        buffer: memoryview | None = getattr(self._buffers, "view", None)
        if buffer is None:
            buffer = self._buffers.view = memoryview(bytearray(_READ))
        return buffer

    def _record(self, state: _FileState) -> None:
        record = {"etag": state.remote.etag, "chunk": state.chunk_bytes, "done": sorted(state.done)}
        staging = state.state.with_suffix(".tmp")
        try:
            staging.write_text(json.dumps(record))
            staging.replace(state.state)
        except OSError as exc:
            raise CacheError(f"cannot write {state.state}: {exc.strerror}") from None

    def _finish(self, state: _FileState) -> None:
        # Every chunk is in. The disk writes the file back while the rest of it is hashed: the two
        # used to run one after the other, a third of a second each for 500 MB.
        synced: Future[None] = self._syncer.submit(_fsync, state.part)
        try:
            with state.hash_lock:  # hash what the front has not reached yet
                if state.digests is not None and state.digests.needed and state.hashed < state.chunks:
                    start = state.hashed * state.chunk_bytes
                    state.digests.update_from(state.part, start, state.remote.size)
                    state.hashed = state.chunks
            by_ranges = state.parts is not None
            state.checks = verify_file(state.part, state.expected, state.digests, sha256_by_ranges=by_ranges)
        except ModelSourceError:
            # A bad file is never kept: the next start fetches it again from the bucket.
            wait([synced])
            _discard(state)
            raise
        try:
            synced.result()
            state.part.replace(state.final)
            state.state.unlink(missing_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot finish {state.final}: {exc.strerror}") from None
        log.info("fetched %s (%d bytes; checked: %s)", state.remote.path, state.remote.size, ", ".join(state.checks))


def _discard(state: _FileState) -> None:
    state.part.unlink(missing_ok=True)
    state.state.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Stopped(Exception):
    """Another range failed for good: this one stops without retrying."""


def _with_retries(fetch: Callable[[], None], retries: int, stop: threading.Event, where: str) -> None:
    """Run fetch; on a broken connection wait 0.5 s, 1 s, 2 s ... (at most 8 s) and try again."""
    delay = BACKOFF_START_S
    for attempt in range(retries + 1):
        try:
            fetch()
            return
        except (CredentialsError, SourceNotFound, CacheError, IntegrityError, _Stopped):
            raise
        except Exception as exc:
            if attempt == retries or stop.is_set():
                if isinstance(exc, ModelSourceError):
                    raise
                raise classify(exc, where=where) from None
            log.warning(
                "fetching %s failed (%s); retry %d/%d in %.1f s", where, _reason(exc), attempt + 1, retries, delay
            )
            time.sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)


def _reason(exc: Exception) -> str:
    return str(exc)[:200] or type(exc).__name__
