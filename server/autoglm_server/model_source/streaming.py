"""`--s3-weights stream`: vLLM's Run:ai model streamer reads an s3:// model's safetensors from the bucket.

The daemon still lists the prefix, reads the manifest, checks that the model is whole, and fetches and
verifies every other file (config, tokenizer, processor, index) into the cache: the chat renderer and
vLLM read those locally. Only the weights go from the bucket straight into memory, and nothing checks
them against the manifest (the streamer offers no hook for it), which is why `cache` is the default.

The engine is told through two ordinary vLLM arguments (load_format, model_weights), so it never
learns about S3. The streamer's own S3 client (the AWS SDK for C++) takes its endpoint and addressing
from RUNAI_STREAMER_* variables, set here from the daemon's settings before vLLM spawns its
processes, and its credentials from the standard AWS chain (environment, profile files, web
identity, instance role), which the daemon never copies anywhere.
"""

from __future__ import annotations

import importlib.util
import os

from autoglm_server.model_source.errors import StreamingUnsupported
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.model_source.uri import is_s3_uri


def check_streaming(model: str, engine: str, settings: ModelSourceSettings) -> None:
    """StreamingUnsupported (exit 78) when --s3-weights stream is asked where it cannot work."""
    if settings.s3_weights != "stream":
        return
    if not is_s3_uri(model):
        raise StreamingUnsupported(f"--s3-weights stream applies to s3:// models; --model is {model!r}")
    if engine != "vllm":
        raise StreamingUnsupported(
            "--s3-weights stream needs --engine vllm: the built-in engine loads from the verified cache only"
        )
    if settings.s3_vault_kv_path:
        raise StreamingUnsupported(
            "--s3-weights stream reads credentials from the AWS chain only (environment, profile, web identity);"
            " unset --s3-vault-kv-path or use --s3-weights cache"
        )
    if importlib.util.find_spec("runai_model_streamer_s3") is None:
        raise StreamingUnsupported(
            "--s3-weights stream needs the Run:ai model streamer: pip install 'autoglm-server[vllm]'"
        )


def streamer_environment(settings: ModelSourceSettings) -> dict[str, str]:
    """The RUNAI_STREAMER_* variables that point the streamer where the daemon's own client points."""
    env: dict[str, str] = {}
    endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # The streamer's reads take the standard AWS_ENDPOINT_URL (AWS_ENDPOINT_URL_S3 alone gave "File
        # access error" against SeaweedFS); vLLM's loader knows the RUNAI_ name.
        env["AWS_ENDPOINT_URL"] = env["RUNAI_STREAMER_S3_ENDPOINT"] = endpoint
    if settings.s3_addressing_style != "auto":
        env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"] = "1" if settings.s3_addressing_style == "virtual" else "0"
    if settings.s3_region:
        env["AWS_REGION"] = settings.s3_region
    return env


def streaming_vllm_args(weights_uri: str) -> list[str]:
    """--vllm-arg entries that make vLLM stream the safetensors of weights_uri (config stays local)."""
    return ["load_format=runai_streamer", f"model_weights={weights_uri}"]
