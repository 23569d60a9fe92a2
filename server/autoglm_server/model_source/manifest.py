"""The sha256 manifest a model prefix may hold: `autoglm-manifest.json`, written by `model push`.

    {"format": "autoglm-model-manifest/1",
     "files": [{"path": "config.json", "size": 612, "sha256": "<64 hex>"}, ...]}

Paths are relative to the prefix. When a prefix holds a manifest, every other object must be in it
with the same size and content hash, and everything it lists must be there.
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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: PurePosixPath
    size: int
    sha256: str


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
            entries[path] = ManifestEntry(path, size, digest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"the manifest {where} is malformed: {exc}") from None
    return entries


def render_manifest(entries: list[ManifestEntry]) -> bytes:
    files = [{"path": str(e.path), "size": e.size, "sha256": e.sha256} for e in sorted(entries, key=lambda e: e.path)]
    return (json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n").encode()
