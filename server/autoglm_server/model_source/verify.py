"""A fetched file's bytes against its listed size, its S3 full-object checksum and the manifest.

Where the manifest lists a file's part hashes (or the file is fetched in one range), each ranged GET
is checked on its own as it arrives (RangeVerifier), on the downloading thread, from the buffer the
bytes were just read into. Otherwise only the whole-file hashes a file's checks need are computed,
and download.py feeds them chunk by chunk while the rest of the file is still arriving. S3 checksums are
used when the object has a full-object value of an algorithm computable here (CRC32, SHA256, SHA1);
a composite multipart value (`...-N`) or CRC32C/CRC64NVME is left to the manifest, and the log says
which checks a file passed.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from autoglm_server.model_source.errors import IntegrityError
from autoglm_server.model_source.manifest import PartHashes

_READ = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class S3Checksum:
    """An object's checksum as HeadObject(ChecksumMode=ENABLED) reports it (base64 of the digest)."""

    algorithm: str  # CRC32, SHA256 or SHA1
    value: str


@dataclass(frozen=True, slots=True)
class Expected:
    where: str  # s3://bucket/key, for messages
    size: int
    sha256: str | None = None  # from the manifest
    checksum: S3Checksum | None = None
    parts: PartHashes | None = None  # from the manifest, for files larger than one part


def checksum_from_head(head: dict[str, object]) -> S3Checksum | None:
    """The full-object checksum in a HeadObject answer that this module can check, if any."""
    if str(head.get("ChecksumType", "FULL_OBJECT")) != "FULL_OBJECT":
        return None
    for algorithm in ("SHA256", "SHA1", "CRC32"):
        value = head.get(f"Checksum{algorithm}")
        if isinstance(value, str) and value and "-" not in value:
            return S3Checksum(algorithm, value)
    return None


class Digests:
    """The running hashes one file needs: only those its checks use (hashing is the costly part)."""

    def __init__(self, expected: Expected, *, manifest_sha256: bool = True) -> None:
        """manifest_sha256=False: the manifest's sha256 is checked range by range (RangeVerifier) instead."""
        algorithm = expected.checksum.algorithm if expected.checksum is not None else ""
        whole = expected.sha256 is not None and manifest_sha256
        self._sha256 = hashlib.sha256() if whole or algorithm == "SHA256" else None
        self._sha1 = hashlib.sha1(usedforsecurity=False) if algorithm == "SHA1" else None
        self._crc: int | None = 0 if algorithm == "CRC32" else None

    @property
    def needed(self) -> bool:
        return self._sha256 is not None or self._sha1 is not None or self._crc is not None

    def update(self, block: bytes | memoryview) -> None:
        if self._sha256 is not None:
            self._sha256.update(block)
        if self._sha1 is not None:
            self._sha1.update(block)
        if self._crc is not None:
            self._crc = zlib.crc32(block, self._crc)

    def update_from(self, path: Path, start: int, end: int) -> None:
        """Hash bytes [start, end) of a file.

        One buffer is read into again and again: a fresh 8 MiB bytes object per read costs the
        kernel a page fault per 4 KiB, which on a busy node took as long as the hashing.
        """
        left = end - start
        view = memoryview(bytearray(min(_READ, max(left, 1))))
        with path.open("rb", buffering=0) as handle:
            handle.seek(start)
            while left > 0 and (got := handle.readinto(view[: min(len(view), left)])):
                self.update(view[:got])
                left -= got

    def digest(self, algorithm: str) -> bytes:
        found = {"SHA256": self._sha256, "SHA1": self._sha1}.get(algorithm)
        if found is not None:
            return found.digest()
        if algorithm != "CRC32" or self._crc is None:
            raise ValueError(f"{algorithm} was not computed for this file")
        return self._crc.to_bytes(4, "big")


def verify_file(
    path: Path, expected: Expected, digests: Digests | None = None, *, sha256_by_ranges: bool = False
) -> list[str]:
    """Raise IntegrityError naming the object unless every available check passes; return the checks.

    `digests` may arrive already fed with the whole file (download.py hashes chunks as they land);
    without it the file is read once here. sha256_by_ranges: every range already passed its
    RangeVerifier, so the manifest's sha256 holds without hashing the file again.
    """
    size = path.stat().st_size
    if size != expected.size:
        raise IntegrityError(f"{expected.where}: fetched {size} bytes, the listing says {expected.size}")
    if digests is None:
        digests = Digests(expected)
        if digests.needed:
            digests.update_from(path, 0, size)
    checks = ["size"]
    if expected.checksum is not None:
        actual = base64.b64encode(digests.digest(expected.checksum.algorithm)).decode()
        if actual != expected.checksum.value:
            raise IntegrityError(
                f"{expected.where}: S3 {expected.checksum.algorithm} checksum mismatch (the object's bytes changed"
                " or broke in transit); the file was not used"
            )
        checks.append(f"s3-{expected.checksum.algorithm.lower()}")
    if expected.sha256 is not None and sha256_by_ranges:
        checks.append("manifest-sha256-parts" if expected.parts is not None else "manifest-sha256")
    elif expected.sha256 is not None:
        actual_sha = digests.digest("SHA256").hex()
        if actual_sha != expected.sha256:
            raise IntegrityError(
                f"{expected.where}: sha256 {actual_sha[:16]}... does not match the manifest's"
                f" {expected.sha256[:16]}...; the file was not used"
            )
        checks.append("manifest-sha256")
    return checks


def range_hashes(expected: Expected, chunk_bytes: int) -> PartHashes | None:
    """The hashes a file's ranged GETs can each be checked against, if any.

    The manifest's parts; or, for a file that one range fetches whole, its sha256 as a single part.
    """
    if expected.parts is not None:
        return expected.parts
    if expected.sha256 is not None and 0 < expected.size <= chunk_bytes:
        return PartHashes(expected.size, (expected.sha256,))
    return None


class RangeVerifier:
    """Checks the bytes of one ranged GET, as they arrive, against the part hashes they cover.

    The range must start on a part boundary; a part is checked the moment its last byte is fed, so a
    bad part stops the download at once. A range cut short leaves its last part unchecked, and the
    downloader fetches that range again from its start (with a fresh verifier).
    """

    def __init__(self, parts: PartHashes, file_size: int, start: int, where: str) -> None:
        if start % parts.size:
            raise ValueError(f"range start {start} is not on a {parts.size}-byte part boundary")
        self._parts = parts
        self._file_size = file_size
        self._where = where
        self._index = start // parts.size
        self._left = self._part_length()
        self._hash = hashlib.sha256()

    def _part_length(self) -> int:
        return max(0, min(self._parts.size, self._file_size - self._index * self._parts.size))

    def update(self, block: memoryview) -> None:
        while len(block):
            if self._left == 0:
                raise IntegrityError(f"{self._where}: more bytes arrived than its {self._file_size}")
            take = min(len(block), self._left)
            self._hash.update(block[:take])
            self._left -= take
            block = block[take:]
            if self._left == 0:
                self._check_part()

    def _check_part(self) -> None:
        actual, wanted = self._hash.hexdigest(), self._parts.sha256[self._index]
        if actual != wanted:
            start = self._index * self._parts.size
            end = start + self._part_length() - 1
            raise IntegrityError(
                f"{self._where}: sha256 {actual[:16]}... of bytes {start}-{end} does not match the manifest's"
                f" {wanted[:16]}... for that part; the file was not used"
            )
        self._index += 1
        self._left = self._part_length() if self._index < len(self._parts.sha256) else 0
        self._hash = hashlib.sha256()


def hash_file(path: Path, part_size: int) -> tuple[str, PartHashes | None]:
    """A file's sha256 and, when it is larger than one part, the sha256 of each part: one read."""
    whole = hashlib.sha256()
    parts: list[str] = []
    view = memoryview(bytearray(min(_READ, part_size)))
    with path.open("rb", buffering=0) as handle:
        while True:
            part, left = hashlib.sha256(), part_size
            while left and (got := handle.readinto(view[: min(len(view), left)])):
                whole.update(view[:got])
                part.update(view[:got])
                left -= got
            if left == part_size:
                break  # the end of the file: nothing went into this part
            parts.append(part.hexdigest())
            if left:
                break
    if len(parts) <= 1:
        return whole.hexdigest(), None
    return whole.hexdigest(), PartHashes(part_size, tuple(parts))
