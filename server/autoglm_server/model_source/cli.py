"""`autoglm-server model push DIR s3://...` and `autoglm-server model fetch s3://...`.

Both take the daemon's S3 settings (--s3-endpoint-url, --s3-addressing-style, --s3-vault-kv-path,
AUTOGLM_* and the AWS_* chain). `fetch` fills the cache exactly as `serve` would and prints the
verified directory, so an init container or a pipeline can warm a node. A failure prints one
`error: ...` line and exits with the fault's code (model_source/errors.py).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, CliPositionalArg, SettingsError

from autoglm_server.auth.settings import VaultSettings
from autoglm_server.command_settings import command_config
from autoglm_server.model_source.client import build_client
from autoglm_server.model_source.errors import ModelSourceError
from autoglm_server.model_source.progress import MIB
from autoglm_server.model_source.push import push
from autoglm_server.model_source.resolve import describe, resolve_model
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.model_source.uri import parse_s3_uri

USAGE = """usage: autoglm-server model push DIR s3://bucket/prefix [--replace] [--s3-endpoint-url URL] ...
       autoglm-server model fetch s3://bucket/prefix [--model-cache-dir DIR] ...
(add --help after the subcommand for every option)"""


class PushSettings(ModelSourceSettings, VaultSettings, BaseSettings):
    """Upload a model directory and its sha256 manifest to s3://bucket/prefix."""

    model_config = command_config("autoglm-server model push")

    directory: CliPositionalArg[str] = Field(description="the model directory (config.json, weights, tokenizer)")
    uri: CliPositionalArg[str] = Field(description="s3://bucket/prefix of the release")
    replace: bool = Field(False, description="overwrite a prefix that already holds objects")


class FetchSettings(ModelSourceSettings, VaultSettings, BaseSettings):
    """Fetch and verify s3://bucket/prefix into the model cache; print the directory as JSON."""

    model_config = command_config("autoglm-server model fetch")

    uri: CliPositionalArg[str] = Field(description="s3://bucket/prefix")


def model_main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    if not argv or argv[0] not in {"push", "fetch"}:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if argv[0] == "push":
            return _push(argv[1:])
        return _fetch(argv[1:])
    except (ValidationError, SettingsError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _push(argv: list[str]) -> int:
    settings = CliApp.run(PushSettings, cli_args=argv)
    uri = parse_s3_uri(settings.uri)
    report = push(
        build_client(settings, settings),
        Path(settings.directory),
        uri,
        replace=settings.replace,
        concurrency=settings.model_download_concurrency,
        chunk_mib=settings.model_download_chunk_mib,
    )
    size = report.bytes / MIB
    print(f"pushed {report.files} files ({size:.1f} MiB) and the manifest to {uri} in {report.seconds:.1f} s")
    return 0


def _fetch(argv: list[str]) -> int:
    settings = CliApp.run(FetchSettings, cli_args=argv)
    parse_s3_uri(settings.uri)
    print(describe(resolve_model(settings.uri, settings, settings)))
    return 0
