"""`autoglm-server bench --engine vllm --model DIR`: the daemon over vLLM against vLLM's own server.

Three runs of the same requests on the same model, side by side in every round:
- daemon (vllm engine), gRPC front door, driven by the SDK's gRPC load generator;
- daemon (vllm engine), HTTP front door, driven by the OpenAI load generator (`openai_load`);
- vLLM's own OpenAI server, driven by the same OpenAI load generator.
Both servers run the same engine configuration (`vllm_options`) and stay up for the whole run; the
order of the three runs rotates from round to round, and each target is the median over rounds of
the ratio within a round (a shared machine's load swings between minutes, less within one round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from autoglm_client.loadgen import LoadReport, LoadRequest, make_requests
from autoglm_server.bench import vllm_options

log = logging.getLogger("autoglm_server.bench")

GRPC = "daemon (vllm) gRPC"
HTTP = "daemon (vllm) HTTP"
PEER = "vLLM server"
# (name, measured, reference, figure, bound, at least?)
TARGETS = (
    ("daemon gRPC / vLLM server, tokens/s", GRPC, PEER, "tokens_per_s", 1.0, True),
    ("daemon HTTP / vLLM server, tokens/s", HTTP, PEER, "tokens_per_s", 0.95, True),
    ("daemon gRPC / vLLM server, TTFT p50", GRPC, PEER, "ttft_p50", 1.1, False),
    ("daemon HTTP / vLLM server, TTFT p50", HTTP, PEER, "ttft_p50", 1.1, False),
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoglm-server bench --engine vllm",
        description="The daemon over vLLM (gRPC and HTTP front doors) against vLLM's own OpenAI server.",
    )
    parser.add_argument("--engine", required=True, choices=["vllm"])
    vllm_options.add_vllm_options(parser)
    parser.add_argument("--requests", type=int, default=32, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=32, help="streams in flight (closed loop)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="side-by-side rounds; the targets take the median")
    return parser


def main(argv: list[str]) -> int:
    """Run the comparison; 0 when every target is met, 1 when one is missed, 2 on errors."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    vllm_options.quiet_http_logs()
    try:
        result = run(args)
    except (RuntimeError, ValueError) as exc:
        print(f"autoglm-server bench --engine vllm: {exc}", file=sys.stderr)
        return 2
    for path in write(result, args.output_dir):
        print(f"wrote {path}")
    print(markdown(result))
    return 0 if all(t["met"] for t in result["targets"]) else 1


def token_range(model: str) -> int:
    """How many ordinary token ids the prompts may draw from (the specials sit above them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return max(1, len(tokenizer) - len(tokenizer.all_special_ids))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from autoglm_server.bench import report
    from autoglm_server.bench.peer import running_vllm_server
    from autoglm_server.bench.processes import running_daemon, start_all

    if args.concurrency < 1 or args.requests < 1:
        raise ValueError("--requests and --concurrency must be >= 1")
    p, g = args.prompt_tokens, args.max_new_tokens
    requests = make_requests(
        args.requests, prompt_tokens=(p, p), max_new_tokens=(g, g), vocab_size=token_range(args.model), seed=args.seed
    )
    info = report.machine()
    env = vllm_options.vllm_env(args)
    python = vllm_options.vllm_python(args)
    result: dict[str, Any] = {
        "model": args.model,
        "dtype": args.dtype,
        "device": args.device,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "prompt_tokens": p,
        "max_new_tokens": g,
        "repeat": args.repeat,
        "vllm_env": {**vllm_options.environment_note(), **env},
        "daemon_args": vllm_options.daemon_args(args, engine="vllm", max_running=args.concurrency),
        "peer_args": vllm_options.peer_args(args, max_running=args.concurrency),
    }
    with contextlib.ExitStack() as stack:
        servers = start_all(
            stack,
            {
                "daemon": running_daemon("daemon-vllm", python, args.model, result["daemon_args"], env),
                "peer": running_vllm_server("vllm-server", python, args.model, result["peer_args"], env),
            },
        )
        daemon, peer = servers["daemon"], servers["peer"]
        result["started_s"] = {"daemon": daemon.started_s, "vLLM server": peer.started_s}
        assert daemon.grpc_target is not None
        samples = asyncio.run(_rounds(daemon.grpc_target, daemon.http_url, peer.http_url, requests, args))
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    result["machine"] = info
    result["runs"] = {name: _best(reports) for name, reports in samples.items()}
    result["rounds"] = samples
    result["targets"] = targets(samples)
    return result


async def _rounds(
    grpc_target: str, daemon_url: str, peer_url: str, requests: list[LoadRequest], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    from autoglm_client.loadgen import run_load
    from autoglm_server.bench.openai_load import make_client, run_openai_load, served_model

    models = {}
    for url in (daemon_url, peer_url):
        client = make_client(url)
        try:
            models[url] = served_model(await client.models.list())
        finally:
            await client.close()

    def load(name: str, batch: list[LoadRequest]) -> Coroutine[Any, Any, LoadReport]:
        if name == GRPC:
            return run_load(grpc_target, batch, concurrency=args.concurrency)
        url = daemon_url if name == HTTP else peer_url
        return run_openai_load(url, batch, concurrency=args.concurrency, model=models[url])

    order = [GRPC, HTTP, PEER]
    for name in order:  # untimed: first-request costs (graph capture, allocator warm-up) stay out
        await load(name, requests[: min(len(requests), args.concurrency)])
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    for round_ in range(max(1, args.repeat)):
        rotated = order[round_ % 3 :] + order[: round_ % 3]
        for name in rotated:
            log.info("round %d: %s", round_ + 1, name)
            report = await load(name, requests)
            if report.errors:
                raise RuntimeError(f"{name} answered errors: {report.errors}")
            samples[name].append(report.to_dict())
    return samples


def _best(reports: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(max(reports, key=lambda r: float(r["tokens_per_s"])))
    best["samples"] = [r["tokens_per_s"] for r in reports]
    best["median_tokens_per_s"] = statistics.median(best["samples"])
    return best


_FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "tokens_per_s": lambda r: float(r["tokens_per_s"]),
    "ttft_p50": lambda r: float(r["ttft_ms"]["p50"]),
}


def targets(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, measured, reference, figure, bound, at_least in TARGETS:
        value = _FIGURES[figure]
        ratios = [value(m) / value(r) for m, r in zip(samples[measured], samples[reference], strict=True)]
        ratio = round(statistics.median(ratios), 3)  # judged as shown
        out.append(
            {
                "target": name,
                "ratio": ratio,
                "rounds": [round(x, 3) for x in ratios],
                "bound": f">= {bound}" if at_least else f"<= {bound}",
                "met": ratio >= bound if at_least else ratio <= bound,
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### vLLM: {result['model']} ({result['dtype']}), {result['concurrency']} streams of "
        f"{result['prompt_tokens']} prompt + {result['max_new_tokens']} new tokens",
        "",
        "Tokens/s: the best and the median of the rounds; latencies of the best round, in ms.",
        "",
        "| run | tokens/s best | tokens/s median | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in result["runs"].items():
        ttft, itl = run["ttft_ms"], run["itl_ms"]
        lines.append(
            f"| {name} | {run['tokens_per_s']:.1f} | {run['median_tokens_per_s']:.1f} | {ttft['p50']:.1f} | "
            f"{ttft['p99']:.1f} | {itl['p50']:.1f} | {itl['p99']:.1f} |"
        )
    lines += ["", "| target (median of side-by-side rounds) | ratio | rounds | bound | met |", "|---|---:|---|---|---|"]
    for t in result["targets"]:
        rounds = ", ".join(f"{r:.2f}" for r in t["rounds"])
        lines.append(f"| {t['target']} | {t['ratio']:.2f} | {rounds} | {t['bound']} | {'yes' if t['met'] else 'NO'} |")
    started = ", ".join(f"{n} {s:.1f} s" for n, s in result["started_s"].items())
    lines += ["", f"Start-up to healthy: {started}."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "vllm.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = output_dir / "vllm.md"
    md_path.write_text(markdown(result))
    return [json_path, md_path]
