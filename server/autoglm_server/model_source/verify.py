"""A fetched file's bytes against its listed size, its S3 full-object checksum and the manifest.

One read pass computes sha256 and CRC32 (and SHA-1 when the object carries one). S3 checksums are
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


def verify_file(path: Path, expected: Expected) -> list[str]:
    """Raise IntegrityError naming the object unless every available check passes; return the checks."""
    size = path.stat().st_size
    if size != expected.size:
        raise IntegrityError(f"{expected.where}: fetched {size} bytes, the listing says {expected.size}")
    sha256, sha1, crc = hashlib.sha256(), hashlib.sha1(usedforsecurity=False), 0
    want_sha1 = expected.checksum is not None and expected.checksum.algorithm == "SHA1"
    with path.open("rb") as handle:
        while block := handle.read(_READ):
            sha256.update(block)
            crc = zlib.crc32(block, crc)
            if want_sha1:
                sha1.update(block)
    checks = ["size"]
    if expected.checksum is not None:
        digests = {
            "SHA256": sha256.digest(),
            "SHA1": sha1.digest(),
            "CRC32": crc.to_bytes(4, "big"),
        }
        actual = base64.b64encode(digests[expected.checksum.algorithm]).decode()
        if actual != expected.checksum.value:
            raise IntegrityError(
                f"{expected.where}: S3 {expected.checksum.algorithm} checksum mismatch (the object's bytes changed"
                " or broke in transit); the file was not used"
            )
        checks.append(f"s3-{expected.checksum.algorithm.lower()}")
    if expected.sha256 is not None:
        if sha256.hexdigest() != expected.sha256:
            raise IntegrityError(
                f"{expected.where}: sha256 {sha256.hexdigest()[:16]}... does not match the manifest's"
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
