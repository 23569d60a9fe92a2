"""A boto3 S3 client built from the settings, and botocore's errors turned into our fault classes.

The credential chain is boto3's own (environment, shared files and profiles, web identity, container
and instance roles); an endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL is botocore's too. Only
when --s3-vault-kv-path is set do the keys come from Vault instead. Nothing here formats a key into
a message: botocore's errors carry the server's code and text, which never echo the secret.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from autoglm_server.auth.settings import VaultSettings
from autoglm_server.model_source.errors import (
    CredentialsError,
    IntegrityError,
    ModelSourceError,
    SourceNotFound,
    SourceUnavailable,
)
from autoglm_server.model_source.settings import ModelSourceSettings

if TYPE_CHECKING:
    from autoglm_server.model_source.vault_credentials import StaticCredentials

log = logging.getLogger(__name__)

_DENIED = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken", "403"}
)
_MISSING = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Client:
    """The botocore client plus what messages may say about where it points."""

    raw: Any
    endpoint: str


def build_client(settings: ModelSourceSettings, vault: VaultSettings | None = None) -> S3Client:
    """An S3 client from the AWS chain (or Vault); raises CredentialsError when there are no keys."""
    static: StaticCredentials | None = None
    if settings.s3_vault_kv_path:
        if vault is None:
            raise CredentialsError("--s3-vault-kv-path is set but no Vault settings were given")
        # Imported here: hvac costs a `model fetch` without Vault a twentieth of a second at start.
        from autoglm_server.model_source.vault_credentials import read_vault_credentials

        static = read_vault_credentials(vault, settings.s3_vault_kv_path)
    session = boto3.session.Session(
        aws_access_key_id=static.access_key_id if static else None,
        aws_secret_access_key=static.secret_access_key.get_secret_value() if static else None,
        aws_session_token=static.session_token.get_secret_value() if static and static.session_token else None,
        region_name=settings.s3_region or None,
    )
    if session.get_credentials() is None:
        raise CredentialsError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, web identity,"
            " or --s3-vault-kv-path)"
        )
    config = Config(
        region_name=settings.s3_region or session.region_name or "us-east-1",
        s3={"addressing_style": settings.s3_addressing_style},
        # Connection errors and throttling are retried by botocore (standard mode); a body that breaks
        # mid-stream is retried per range by download.py.
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=settings.model_download_concurrency + 4,
        connect_timeout=10,
        read_timeout=60,
        # Compute and check CRCs only where the operation requires them: ranged GETs cannot be checked
        # against a whole-object checksum, and verify.py checks whole files itself.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    raw = session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)
    return S3Client(raw, raw.meta.endpoint_url)


def classify(error: Exception, *, where: str) -> ModelSourceError:
    """One of our fault classes for a botocore error met while touching `where` (bucket/key)."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return CredentialsError(f"no usable S3 credentials for {where}: {error}")
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        text = str(info.get("Message", "")) or code
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            return IntegrityError(f"{where} changed while it was being fetched (ETag differs); start again")
        if code in _DENIED or status == 403:
            return CredentialsError(f"the S3 server refused the credentials for {where}: {code} ({text})")
        if code in _MISSING or status == 404:
            return SourceNotFound(f"{where} does not exist: {code} ({text})")
        return SourceUnavailable(f"S3 error on {where}: {code} ({text})")
    if isinstance(error, BotoCoreError):
        return SourceUnavailable(f"cannot reach the S3 server for {where}: {error}")
    if isinstance(error, OSError):
        return SourceUnavailable(f"connection to the S3 server broke for {where}: {error}")
    return SourceUnavailable(f"S3 request for {where} failed: {type(error).__name__}")
