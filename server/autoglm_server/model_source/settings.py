"""Settings of model sources (part of config.Settings): the cache, the S3 endpoint, the download."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

DEFAULT_CACHE_DIR = "~/.cache/autoglm/models"


class ModelSourceSettings(BaseModel):
    """Where an s3:// model is cached and how it is fetched.

    Credentials follow the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
    web identity, instance roles) unless --s3-vault-kv-path names a Vault KV secret to read them from.
    """

    model_cache_dir: str = Field(
        DEFAULT_CACHE_DIR, description="where s3:// models are downloaded and verified (shared by daemons on a node)"
    )
    s3_endpoint_url: str = Field(
        "",
        description="S3 endpoint (MinIO, SeaweedFS, ...); empty: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS",
    )
    s3_region: str = Field("", description="region to sign for; empty: AWS_REGION / the profile, else us-east-1")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="bucket in the path (MinIO-like servers) or in the host name; auto lets botocore pick"
    )
    s3_vault_kv_path: str = Field(
        "",
        description="a Vault KV v2 secret (mount/path) holding access_key_id and secret_access_key"
        " (optional session_token) to use instead of the AWS chain; logs in like the key source",
    )
    s3_weights: Literal["cache", "stream"] = Field(
        "cache",
        description="how the vLLM engine gets an s3:// model's weights: cache (default) downloads them into"
        " --model-cache-dir and checks every byte against the manifest before loading; stream lets vLLM's"
        " Run:ai model streamer read the safetensors from the bucket into memory (no local copy; NOT checked"
        " against the manifest; the other files are still fetched and verified; AWS chain credentials only)",
    )
    model_download_concurrency: int = Field(8, ge=1, le=256, description="ranged GETs in flight at once")
    model_download_chunk_mib: int = Field(16, ge=1, le=1024, description="size of one ranged GET, in MiB")
    model_download_retries: int = Field(
        5, ge=0, le=20, description="retries of a failed range (backoff 0.5 s doubling to 8 s) before giving up"
    )
