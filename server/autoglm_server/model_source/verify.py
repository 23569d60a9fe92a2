"""A fetched file's bytes against its listed size, its S3 full-object checksum and the manifest.

Only the hashes a file's checks need are computed, and download.py feeds them chunk by chunk while
the rest of the file is still arriving, so verification adds little after the last byte. S3 checksums are
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

    def __init__(self, expected: Expected) -> None:
        algorithm = expected.checksum.algorithm if expected.checksum is not None else ""
        self._sha256 = hashlib.sha256() if expected.sha256 is not None or algorithm == "SHA256" else None
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


def verify_file(path: Path, expected: Expected, digests: Digests | None = None) -> list[str]:
    """Raise IntegrityError naming the object unless every available check passes; return the checks.

    `digests` may arrive already fed with the whole file (download.py hashes chunks as they land);
    without it the file is read once here.
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
    if expected.sha256 is not None:
        actual_sha = digests.digest("SHA256").hex()
        if actual_sha != expected.sha256:
            raise IntegrityError(
                f"{expected.where}: sha256 {actual_sha[:16]}... does not match the manifest's"
                f" {expected.sha256[:16]}...; the file was not used"
            )
        checks.append("manifest-sha256")
    return checks


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ):
            digest.update(block)
    return digest.hexdigest()
