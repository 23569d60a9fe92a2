"""`s3://bucket/prefix` parsed, and object keys turned into paths that cannot leave a directory.

Keys come from the bucket, so they are untrusted input: a key `prefix/../../etc/passwd` or one that
starts with `/` would otherwise write outside the cache. Every key is checked as a relative POSIX
path of plain segments before it names a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from autoglm_server.model_source.errors import InvalidModelUri

SCHEME = "s3://"
# S3's bucket naming rules (3-63 characters, lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_uri(model: str) -> bool:
    return model.startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class S3Uri:
    """A bucket and a key prefix (no leading or trailing slash; may be empty: the whole bucket)."""

    bucket: str
    prefix: str

    @property
    def list_prefix(self) -> str:
        """What ListObjectsV2 is asked for: `v1/` must not match `v10/`."""
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, relative: str) -> str:
        return self.list_prefix + relative

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


def parse_s3_uri(model: str) -> S3Uri:
    """Parse `s3://bucket[/prefix]`; refuse credentials in the URI, odd buckets and unsafe prefixes."""
    if not is_s3_uri(model):
        raise InvalidModelUri(f"not an s3:// URI: {model[:200]!r}")
    rest = model[len(SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        # Never echo it: the part before '@' may be a secret someone pasted into the URI.
        raise InvalidModelUri("an s3:// URI names a bucket only: credentials and ports go in the settings")
    if not _BUCKET.match(bucket):
        raise InvalidModelUri(f"{bucket!r} is not a valid bucket name in {model!r}")
    prefix = prefix.removesuffix("/")  # s3://b/v1/ is s3://b/v1; a leading "/" is refused below
    if prefix:
        check_relative(prefix, what="prefix")
    return S3Uri(bucket, prefix)


def check_relative(path: str, *, what: str = "key") -> PurePosixPath:
    """`path` as a relative path of plain segments, or InvalidModelUri naming it."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidModelUri(f"unsafe {what} {path!r}: absolute or not a plain relative path")
    parts = path.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidModelUri(f"unsafe {what} {path!r}: '..', '.' or empty segments would escape the cache")
    return PurePosixPath(*parts)


def relative_key(uri: S3Uri, key: str) -> PurePosixPath:
    """The path of `key` below the URI's prefix, checked safe to join onto a directory."""
    if not key.startswith(uri.list_prefix):
        raise InvalidModelUri(f"key {key!r} is outside {uri}")
    return check_relative(key[len(uri.list_prefix) :])
