"""The `autoglm` command line: generate, chat, info, tokenize, health and bench against a daemon.

Every command takes the connection flags (--target, --timeout, TLS, token); AUTOGLM_TARGET and
AUTOGLM_TOKEN supply defaults. A failed call prints one line with its status code and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from autoglm_client import cli_bench, cli_generate
from autoglm_client.channel import DEFAULT_TARGET, TlsConfig
from autoglm_client.client import Client
from autoglm_client.errors import AutoglmError
from autoglm_client.tokens import FileToken, StaticToken, TokenError, TokenProvider
from autoglm_client.types import HealthStatus

EXIT_ERROR = 1
EXIT_NOT_SERVING = 3  # `autoglm health` when the service answers but is not SERVING
EXIT_INTERRUPTED = 130


def _connection_flags(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=environ.get("AUTOGLM_TARGET") or DEFAULT_TARGET,
        help="daemon address HOST:PORT (env AUTOGLM_TARGET; default %(default)s)",
    )
    group.add_argument("--timeout", type=float, default=None, help="deadline of each call in seconds")
    group.add_argument("--tls", action="store_true", help="use TLS with the system's trust store")
    group.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify the server (implies --tls)")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for mTLS (with --tls-key)")
    group.add_argument("--tls-key", metavar="PEM", help="client private key for mTLS (with --tls-cert)")
    group.add_argument("--tls-server-name", metavar="NAME", help="name to check in the server certificate")
    group.add_argument(
        "--token",
        default=environ.get("AUTOGLM_TOKEN") or None,
        help="bearer token (env AUTOGLM_TOKEN); prefer --token-file, which stays out of `ps`",
    )
    group.add_argument("--token-file", metavar="FILE", help="file holding the bearer token, re-read on change")
    return parent


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; `environ` (default os.environ) supplies the env-var defaults."""
    connection = _connection_flags(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(prog="autoglm", description="Talk to an autoglm-serve daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cli_generate.add_parsers(commands, connection)

    info = commands.add_parser("info", parents=[connection], help="describe the served model")
    info.add_argument("--json", action="store_true", help="print JSON")

    tokenize = commands.add_parser("tokenize", parents=[connection], help="print the token ids of a text")
    tokenize.add_argument("text", help="the text to tokenize")
    tokenize.add_argument("--add-special-tokens", action="store_true", help="add BOS and such, as Generate does")
    tokenize.add_argument("--json", action="store_true", help="print JSON")

    health = commands.add_parser(
        "health", parents=[connection], help="grpc.health.v1 status (exit 0 only when SERVING)"
    )
    health.add_argument(
        "--service", default="", help='service name: "" liveness, autoglm.v1.GenerationService readiness'
    )

    cli_bench.add_parser(commands, connection)
    return parser


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name):
        return None
    return TlsConfig(
        root_ca=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key, server_name=args.tls_server_name
    )


def token_provider(args: argparse.Namespace) -> TokenProvider | None:
    if args.token_file:
        return FileToken(args.token_file)
    if args.token:
        return StaticToken(args.token)
    return None


def _run_info(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    info = dataclasses.asdict(client.model_info())
    if args.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    for key, value in info.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else value
        out.write(f"{key}: {shown}\n")
    return 0


def _run_tokenize(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    ids = client.tokenize(args.text, add_special_tokens=args.add_special_tokens)
    shown = json.dumps({"token_ids": list(ids), "count": len(ids)}) if args.json else " ".join(map(str, ids))
    out.write(shown + "\n")
    return 0


def _run_health(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    status = client.health(args.service)
    out.write(f"{status}\n")
    return 0 if status is HealthStatus.SERVING else EXIT_NOT_SERVING


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a parsed command; errors propagate (main turns them into one line)."""
    tls, provider = tls_config(args), token_provider(args)
    if args.command == "bench":
        return asyncio.run(cli_bench.run(args, tls, provider, out, err))
    with Client(args.target, tls=tls, token_provider=provider, timeout=args.timeout) as client:
        if args.command == "generate":
            return cli_generate.run_generate(client, args, out, err)
        if args.command == "chat":
            return cli_generate.run_chat(client, args, out, err)
        if args.command == "info":
            return _run_info(client, args, out)
        if args.command == "tokenize":
            return _run_tokenize(client, args, out)
        return _run_health(client, args, out)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the `autoglm` console script."""
    args = build_parser(environ).parse_args(argv)
    try:
        return run(args, sys.stdout, sys.stderr)
    except AutoglmError as exc:
        sys.stderr.write(f"autoglm: {exc.code.name}: {exc.message}\n")
    except (TokenError, OSError, ValueError) as exc:
        sys.stderr.write(f"autoglm: error: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("autoglm: interrupted\n")
        return EXIT_INTERRUPTED
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
