"""`autoglm-server`: serve, bench, token, vault.

Parses the command line into one Settings object, configures logging, and runs the daemon.
Start-up problems print one clear line, never a traceback wall.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from autoglm_server import __version__
from autoglm_server.errors import StartupError

if TYPE_CHECKING:
    from autoglm_server.config import Settings

USAGE = f"""autoglm-server {__version__}

usage: autoglm-server COMMAND [options]

commands:
  serve     run the gRPC daemon (autoglm-server serve --help lists every setting)
  bench     compare the daemon with plain transformers generate on one model
  token     mint a JWT through Vault transit (autoglm-server token mint --help)
  vault     apply the Vault policies, keys and auth roles (autoglm-server vault bootstrap --help)
  check-parity
            compare an engine with transformers' generate on an agent step with a screenshot
            (autoglm-server check-parity --model DIR [--engine builtin|vllm] [--image PNG])
  model     publish a model to S3 with its manifest, or fetch one into the cache
            (autoglm-server model push DIR s3://bucket/prefix; autoglm-server model fetch s3://...)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    if command == "serve":
        return serve(rest)
    if command == "bench":
        from autoglm_server.bench import bench_main

        return bench_main(rest)
    if command == "token":
        from autoglm_server.auth.cli import token_main

        return token_main(rest)
    if command == "check-parity":
        from autoglm_server.parity.check import main as check_parity_main

        return check_parity_main(rest)
    if command == "vault":
        from autoglm_server.auth.cli import vault_main

        return vault_main(rest)
    if command == "model":
        from autoglm_server.model_source.cli import model_main

        return model_main(rest)
    print(f"autoglm-server: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def serve(argv: Sequence[str]) -> int:
    from autoglm_server.config import load_settings

    settings = load_settings(argv)
    _configure_logging(settings)
    try:
        resolved = _resolve_model(settings)
        code = asyncio.run(_serve(settings, resolved))
    except StartupError as error:
        logging.getLogger("autoglm_server").error("cannot start: %s", error)
        code = error.exit_code
    except KeyboardInterrupt:  # a signal before the handlers were installed
        code = 0
    _exit_now(code)


def _resolve_model(settings: object) -> object:
    """`--model` as a verified local directory, before any engine exists (an s3:// source is fetched)."""
    from autoglm_server.config import Settings
    from autoglm_server.model_source.resolve import resolve_model
    from autoglm_server.model_source.streaming import check_streaming

    assert isinstance(settings, Settings)
    check_streaming(settings.model, settings.engine, settings)
    return resolve_model(settings.model, settings, settings)


def _streaming_engine_settings(settings: Settings, weights_uri: str) -> Settings:
    """--s3-weights stream: vLLM reads config and tokenizer from the verified cache folder and streams
    the safetensors from the bucket (two ordinary vLLM arguments; the engine learns nothing of S3)."""
    from autoglm_server.model_source.streaming import streamer_environment, streaming_vllm_args

    os.environ.update(streamer_environment(settings))  # read by the streamer in vLLM's spawned processes
    logging.getLogger("autoglm_server").warning(
        "model %s: vLLM streams the weights from the bucket (--s3-weights stream); they are NOT checked"
        " against the manifest (config and tokenizer files are); --s3-weights cache checks every byte",
        weights_uri,
    )
    return settings.model_copy(update={"vllm_arg": [*settings.vllm_arg, *streaming_vllm_args(weights_uri)]})


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown of torch and thousands of modules.

    The shutdown sequence has already drained, stopped the servers and the engine and flushed the
    traces; tearing the interpreter down after that took 6-11 s here, time a pod spends terminating
    for nothing. Logs are flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(settings: object, resolved: object) -> int:
    from autoglm_server.app import Daemon
    from autoglm_server.config import Settings
    from autoglm_server.engine.protocol import Engine
    from autoglm_server.model_source.resolve import ResolvedModel

    assert isinstance(settings, Settings)
    assert isinstance(resolved, ResolvedModel)
    # The engines load the resolved directory: they never see the URI or the credentials.
    engine_settings = settings.model_copy(update={"model": resolved.path}) if resolved.remote else settings
    if resolved.weights_uri:
        engine_settings = _streaming_engine_settings(engine_settings, resolved.weights_uri)
    engine: Engine
    if getattr(settings, "engine", "builtin") == "vllm":
        # Imported only when chosen: vllm is an optional dependency (the `vllm` extra).
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise StartupError("--engine vllm needs vLLM: install 'autoglm-server[vllm]' (CPU: see .ci/vllm-env.sh)")
        from autoglm_server.engine.vllm.engine import create_engine as create_vllm_engine

        engine = create_vllm_engine(engine_settings)
    else:
        from autoglm_server.engine.builtin.async_engine import create_engine

        engine = create_engine(engine_settings)
    return await Daemon(settings, engine, model_source=resolved).run()


def _configure_logging(settings: object) -> None:
    from autoglm_server.config import Settings
    from autoglm_server.observability.logging_setup import configure_logging

    assert isinstance(settings, Settings)
    configure_logging(settings)


if __name__ == "__main__":
    sys.exit(main())
