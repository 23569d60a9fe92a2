"""`autoglm-server bench --model M --output-dir DIR`: all baselines and daemon runs, one model, one run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoglm_server.bench.daemon import Daemon

log = logging.getLogger("autoglm_server.bench")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoglm-server bench",
        description="Compare the daemon (continuous batching, through gRPC) with transformers generate().",
    )
    parser.add_argument("--model", default="builtin:tiny", help="as for serve --model (default builtin:tiny)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where bench.json/.md/.png go")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch threads in both processes (0: the daemon's auto choice for the model, in both)",
    )
    parser.add_argument("--requests", type=int, default=32, help="requests per run (and the ceiling's batch)")
    parser.add_argument(
        "--serial-requests", type=int, default=0, help="requests for serial and daemon at 1 (0: --requests)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt length of the uniform runs")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="output length of the uniform runs")
    parser.add_argument("--mixed-prompt-tokens", default="8,128", help="low,high prompt length of the mixed run")
    parser.add_argument("--mixed-new-tokens", default="8,128", help="low,high output length of the mixed run")
    parser.add_argument("--concurrency", default="1,8,32", help="daemon concurrencies of the uniform runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request lengths and prompts")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; the best counts (shared machines are noisy)"
    )
    return parser


def _pair(text: str) -> tuple[int, int]:
    low, high = (int(x) for x in text.split(","))
    return low, high


def builtin_main(argv: list[str]) -> int:
    """Run the built-in benchmark; returns the exit status (1 when a target is missed, 2 on bad arguments).

    `autoglm-server bench` enters through routing.bench_main, which sends --agent and --engine vllm
    elsewhere and everything else here."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        result = run(args)
    except RuntimeError as exc:
        print(f"autoglm-server bench: {exc}", file=sys.stderr)
        return 2
    from autoglm_server.bench import report

    for path in report.write(result, args.output_dir):
        print(f"wrote {path}")
    print(report.markdown(result))
    return 0 if all(t["met"] for t in result["targets"]) else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from autoglm_client.loadgen import make_requests
    from autoglm_server.bench import baselines, report
    from autoglm_server.bench.daemon import running_daemon
    from autoglm_server.engine.builtin import loader
    from autoglm_server.engine.settings import EngineSettings

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    info = report.machine()
    settings = EngineSettings.model_validate({"model": args.model, "dtype": args.dtype, "device": args.device})
    loaded = loader.load(settings)
    desc = loaded.description
    # The baselines get the thread count the daemon picks for this model (with 0 the daemon resolves
    # it itself, by the same rule): both sides compute with the same number of torch threads.
    threads = loader.resolve_torch_threads(args.torch_threads, loaded.model, next(loaded.model.parameters()).device)
    torch.set_num_threads(threads)
    vocab = min(desc.vocab_size, len(loaded.tokenizer)) - len(loaded.tokenizer.all_special_ids)
    n, p, g = args.requests, args.prompt_tokens, args.max_new_tokens
    uniform = make_requests(n, prompt_tokens=(p, p), max_new_tokens=(g, g), vocab_size=vocab, seed=args.seed)
    serial_set = uniform[: args.serial_requests or n]
    mixed = make_requests(
        n,
        prompt_tokens=_pair(args.mixed_prompt_tokens),
        max_new_tokens=_pair(args.mixed_new_tokens),
        vocab_size=vocab,
        seed=args.seed + 1,
    )
    model = loaded.model
    baselines.warm_up(model)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    baseline_runs: dict[str, Callable[[], float]] = {
        "ceiling": lambda: baselines.ceiling(model, uniform),
        "serial": lambda: baselines.serial(model, serial_set),
        "padded": lambda: baselines.padded(model, mixed),
    }
    loads = {f"daemon{c}": (serial_set if c == 1 else uniform, c) for c in concurrencies}
    loads["mixed"] = (mixed, 32)
    result: dict[str, Any] = {
        "model": desc.model_id,
        "dtype": desc.dtype,
        "device": desc.device,
        "torch_threads": threads,
        "torch_threads_flag": args.torch_threads,
        "parameters": sum(t.numel() for t in model.parameters()),
        "requests": n,
        "serial_requests": len(serial_set),
        "prompt_tokens": p,
        "max_new_tokens": g,
        "mixed_lengths": {"prompt_tokens": args.mixed_prompt_tokens, "max_new_tokens": args.mixed_new_tokens},
        "repeat": args.repeat,
    }
    with running_daemon(args.model, desc.dtype, args.device, args.torch_threads, max(max(concurrencies), 32)) as daemon:
        samples = asyncio.run(_interleaved(daemon, baseline_runs, loads, args.repeat))
    for key in baseline_runs:
        rates = samples[key]
        result[key] = {"tokens_per_s": max(rates), "samples": rates}
    daemon_runs = []
    for key in loads:
        reports = samples[key]
        best = dict(max(reports, key=lambda r: r["tokens_per_s"]))
        best["samples"] = [r["tokens_per_s"] for r in reports]
        best["per_step_rounds"] = [r.get("per_step", {}) for r in reports]
        best["per_step"] = report.median_per_step(best["per_step_rounds"])
        if key == "mixed":
            result["mixed"] = best
        else:
            daemon_runs.append(best)
    result["daemon"] = daemon_runs
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    result["machine"] = info
    result["targets"] = report.targets(result)
    return result


# Each daemon run follows the baseline it is compared with, so that a pair sees the same load from
# elsewhere on a shared machine; the targets use the ratio within each pair.
_ORDER = ("ceiling", "daemon32", "serial", "daemon1", "padded", "mixed")


async def _interleaved(
    daemon: Daemon,
    baseline_runs: dict[str, Callable[[], float]],
    loads: dict[str, tuple[list[Any], int]],
    repeat: int,
) -> dict[str, list[Any]]:
    from autoglm_client.loadgen import run_load
    from autoglm_server.bench.daemon import wait_ready

    await wait_ready(daemon.target)
    # One short untimed run, so that the daemon's first-request costs are not in the figures.
    await run_load(daemon.target, loads["mixed"][0][:2], concurrency=2)
    order = [k for k in _ORDER if k in baseline_runs or k in loads]
    order += [k for k in loads if k not in order]
    samples: dict[str, list[Any]] = {key: [] for key in order}
    for round_ in range(max(1, repeat)):
        for key in order:
            log.info("round %d: %s", round_ + 1, key)
            if key in baseline_runs:
                samples[key].append(baseline_runs[key]())
            else:
                requests, concurrency = loads[key]
                samples[key].append(await _load(daemon, requests, concurrency))
    return samples


async def _load(daemon: Daemon, requests: list[Any], concurrency: int) -> dict[str, Any]:
    from autoglm_client.loadgen import run_load
    from autoglm_server.bench import step_timers

    # The engine's step timers around the run: per step, the forward against the rest.
    before = await asyncio.to_thread(step_timers.scrape, daemon.admin_url, daemon.pid)
    report = await run_load(daemon.target, requests, concurrency=concurrency)
    after = await asyncio.to_thread(step_timers.scrape, daemon.admin_url, daemon.pid)
    if report.errors:
        raise RuntimeError(f"the daemon answered errors: {report.errors}")
    result: dict[str, Any] = report.to_dict()
    result["per_step"] = step_timers.per_step(before, after, daemon.pid)
    return result
