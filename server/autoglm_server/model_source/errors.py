"""The faults of a model source, each with its own process exit code.

    ModelSourceError          base (a StartupError: one line, no traceback)
    ├── InvalidModelUri       64  a malformed s3:// URI, or a key that would escape the cache
    ├── CredentialsError      77  no credentials, or credentials the server refuses
    ├── SourceNotFound        66  unknown bucket, unknown or empty prefix
    ├── IncompleteModel       72  the prefix lacks config.json or the weights it names
    ├── IntegrityError        65  a file's bytes disagree with its size, S3 checksum or the manifest
    ├── SourceUnavailable     69  the server cannot be reached (after retries with backoff)
    ├── CacheError            73  the cache directory cannot be written
    └── StreamingUnsupported  78  --s3-weights stream asked where it cannot work (engine, Vault, no streamer)

The codes follow sysexits.h where one fits. Messages name the bucket, the key or the path, never a
credential: botocore's error texts carry the server's code and message, not the request's secrets.
"""

from __future__ import annotations

from autoglm_server.errors import StartupError


class ModelSourceError(StartupError):
    """A model source could not become a verified local directory."""

    exit_code = 1


class InvalidModelUri(ModelSourceError):
    exit_code = 64


class CredentialsError(ModelSourceError):
    exit_code = 77


class SourceNotFound(ModelSourceError):
    exit_code = 66


class IncompleteModel(ModelSourceError):
    exit_code = 72


class IntegrityError(ModelSourceError):
    exit_code = 65


class SourceUnavailable(ModelSourceError):
    exit_code = 69


class CacheError(ModelSourceError):
    exit_code = 73


class StreamingUnsupported(ModelSourceError):
    exit_code = 78
