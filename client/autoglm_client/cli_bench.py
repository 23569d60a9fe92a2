"""`autoglm bench`: drive a deployment with the load generator and report its figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from autoglm_client import loadgen
from autoglm_client.aio import AsyncClient
from autoglm_client.channel import TlsConfig
from autoglm_client.tokens import TokenProvider


def length_range(text: str) -> tuple[int, int]:
    """`64` -> (64, 64); `16:128` -> (16, 128), an inclusive uniform range."""
    low_text, _, high_text = text.partition(":")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LOW:HIGH, got {text!r}") from None
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(f"need 1 <= LOW <= HIGH, got {text!r}")
    return low, high


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    bench = commands.add_parser(
        "bench",
        parents=[connection],
        help="load-test a deployment",
        description="Closed loop at --concurrency, or open-loop Poisson arrivals at --rate. Prompts are "
        "random token ids and outputs ignore EOS, so lengths are exact.",
    )
    bench.add_argument("--concurrency", type=_positive_int, default=1, help="requests in flight (default 1)")
    bench.add_argument("--requests", type=_positive_int, default=32, help="requests to send (default 32)")
    bench.add_argument("--prompt-tokens", type=length_range, default=(64, 64), help="N or LOW:HIGH (default 64)")
    bench.add_argument("--max-new-tokens", type=length_range, default=(64, 64), help="N or LOW:HIGH (default 64)")
    bench.add_argument("--rate", type=_positive_float, help="open loop: Poisson arrivals per second")
    bench.add_argument("--seed", type=int, default=0, help="seed of lengths, prompts and arrivals")
    bench.add_argument("--json", dest="json_file", metavar="FILE", help="also write the figures as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def format_report(report: loadgen.LoadReport) -> str:
    def row(name: str, p: loadgen.Percentiles) -> str:
        return f"  {name:<8} p50 {p.p50:9.2f}   p90 {p.p90:9.2f}   p99 {p.p99:9.2f}"

    errors = ", ".join(f"{code}={count}" for code, count in report.errors.items()) or "none"
    return "\n".join(
        [
            f"requests     {report.completed} completed of {report.requests}; errors: {errors}",
            f"duration     {report.duration_s:.2f} s",
            f"throughput   {report.tokens_per_s:.1f} generated tokens/s ({report.generated_tokens} tokens)",
            "latency (ms)",
            row("ttft", report.ttft_ms),
            row("itl", report.itl_ms),
            row("e2e", report.e2e_ms),
        ]
    )


def _write_json(path: Path, args: argparse.Namespace, model_id: str, report: loadgen.LoadReport) -> None:
    """The figures with what produced them, so a saved run can be compared with a later one."""
    document = {
        "target": args.target,
        "model_id": model_id,
        "prompt_tokens": list(args.prompt_tokens),
        "max_new_tokens": list(args.max_new_tokens),
        "seed": args.seed,
        **report.to_dict(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


async def run(
    args: argparse.Namespace, tls: TlsConfig | None, provider: TokenProvider | None, out: TextIO, err: TextIO
) -> int:
    token = provider() if provider is not None else None
    async with AsyncClient(args.target, tls=tls, token_provider=provider, timeout=args.timeout) as client:
        info = await client.model_info()
    requests = loadgen.make_requests(
        args.requests,
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        vocab_size=info.vocab_size,
        seed=args.seed,
    )
    err.write(
        f"bench: {args.requests} requests to {args.target} ({info.model_id}), "
        + (f"rate {args.rate}/s, " if args.rate else "")
        + f"concurrency {args.concurrency}\n"
    )
    report = await loadgen.run_load(
        args.target,
        requests,
        concurrency=args.concurrency,
        rate=args.rate,
        token=token,
        progress=not args.no_progress,
        timeout=args.timeout,
        tls=tls,
        seed=args.seed,
    )
    out.write(format_report(report) + "\n")
    if args.json_file:  # the run is over: a small blocking write cannot delay any request
        _write_json(Path(args.json_file), args, info.model_id, report)
    return 0 if report.completed == report.requests else 1
