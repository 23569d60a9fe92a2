"""The sha256 manifest a model prefix may hold: `autoglm-manifest.json`, written by `model push`.

    {"format": "autoglm-model-manifest/1",
     "files": [{"path": "config.json", "size": 612, "sha256": "<64 hex>"},
               {"path": "model.safetensors", "size": 500291736, "sha256": "<64 hex>",
                "part_size": 16777216, "part_sha256": ["<64 hex>", ...]}, ...]}

Paths are relative to the prefix. When a prefix holds a manifest, every other object must be in it
with the same size and content hash, and everything it lists must be there.

A file larger than one part also lists the sha256 of each consecutive `part_size` bytes (the last
part shorter). A downloader checks each ranged GET against them while the bytes are still in its
buffer, on as many threads as it downloads with, instead of hashing the whole file once more after
the last byte landed; together the parts pin the same bytes as the whole-file sha256, which stays
for `sha256sum`. The two fields are optional, so manifests written before them still verify.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from autoglm_server.model_source.errors import IntegrityError
from autoglm_server.model_source.uri import check_relative

MANIFEST_NAME = "autoglm-manifest.json"
FORMAT = "autoglm-model-manifest/1"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MIN_PART_BYTES = 64 * 1024  # a 20 GB model in 64 KiB parts would need a 20 MB manifest: refused
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class PartHashes:
    """The sha256 of each consecutive `size`-byte part of a file; the last part may be shorter."""

    size: int
    sha256: tuple[str, ...]

    @staticmethod
    def count_for(file_size: int, part_size: int) -> int:
        return -(-file_size // part_size)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: PurePosixPath
    size: int
    sha256: str
    parts: PartHashes | None = None


def parse_manifest(raw: bytes, *, where: str) -> dict[PurePosixPath, ManifestEntry]:
    """The entries of a manifest, by path; IntegrityError naming `where` when it is malformed."""
    try:
        document = json.loads(raw)
        if document.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        entries: dict[PurePosixPath, ManifestEntry] = {}
        for item in document["files"]:
            path = check_relative(str(item["path"]), what="manifest path")
            size, digest = int(item["size"]), str(item["sha256"])
            if size < 0 or not _SHA256.match(digest):
                raise ValueError(f"bad size or sha256 for {path}")
            entries[path] = ManifestEntry(path, size, digest, _parse_parts(item, size, path))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"the manifest {where} is malformed: {exc}") from None
    return entries


def _parse_parts(item: dict[str, object], size: int, path: PurePosixPath) -> PartHashes | None:
    if "part_size" not in item and "part_sha256" not in item:
        return None
    part_size = int(str(item["part_size"]))
    hashes = item["part_sha256"]
    if part_size < MIN_PART_BYTES or not isinstance(hashes, list):
        raise ValueError(f"bad part_size or part_sha256 for {path}")
    if len(hashes) != PartHashes.count_for(size, part_size) or not all(
        isinstance(h, str) and _SHA256.match(h) for h in hashes
    ):
        raise ValueError(f"part_sha256 of {path} does not cover its {size} bytes in parts of {part_size}")
    if len(hashes) < 2:
        # One part is the whole file: its hash must be the file's sha256, which is checked instead.
        raise ValueError(f"part_sha256 of {path} lists {len(hashes)} parts; part hashes are for files of two or more")
    return PartHashes(part_size, tuple(hashes))


def render_manifest(entries: list[ManifestEntry]) -> bytes:
    files: list[dict[str, object]] = []
    for e in sorted(entries, key=lambda e: e.path):
        item: dict[str, object] = {"path": str(e.path), "size": e.size, "sha256": e.sha256}
        if e.parts is not None:
            item |= {"part_size": e.parts.size, "part_sha256": list(e.parts.sha256)}
        files.append(item)
    return (json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n").encode()
