"""Which benchmark `autoglm-server bench ARGS` runs: the agent workload, the vLLM comparison, or the
built-in one (bench/cli.py). The entry point of the bench command; nothing it dispatches to imports it."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bench_main(argv: list[str]) -> int:
    """Run the benchmark ARGV asks for; returns its exit status."""
    if (other := alternative(argv)) is not None:
        return other(argv)
    from autoglm_server.bench.cli import builtin_main

    return builtin_main(argv)


def alternative(argv: list[str]) -> Callable[[list[str]], int] | None:
    """The entry point for `--agent` or `--engine vllm`; None for the built-in benchmark."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--agent", action="store_true")
    peek.add_argument("--engine", default="builtin")
    known, _ = peek.parse_known_args(argv)
    if known.agent:
        from autoglm_server.bench import agent_bench

        return agent_bench.main
    if known.engine == "vllm":
        from autoglm_server.bench import vllm_bench

        return vllm_bench.main
    if known.engine != "builtin":
        return _unknown_engine
    if any(arg == "--engine" or arg.startswith("--engine=") for arg in argv):
        return _builtin_without_engine_flag
    return None


def _unknown_engine(argv: list[str]) -> int:
    import sys

    print("autoglm-server bench: --engine must be builtin or vllm", file=sys.stderr)
    return 2


def _builtin_without_engine_flag(argv: list[str]) -> int:
    """`--engine builtin` is the built-in benchmark's default: drop the flag and run it."""
    from autoglm_server.bench.cli import builtin_main

    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--engine":
            skip = True
        elif not arg.startswith("--engine="):
            rest.append(arg)
    return builtin_main(rest)
