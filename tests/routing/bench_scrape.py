"""Print the latency of GET /metrics on the HTTP port while the daemon is under full load (docs/metrics.md).

    .venv/bin/python -m tests.routing.bench_scrape [--seconds 20] [--streams 12]
    .venv-vllm/bin/python -m tests.routing.bench_scrape --engine vllm    # the tiny Llama of tests/vllm

One daemon (built-in engine over builtin:tiny, or the vLLM engine over a tiny random Llama built in a
temporary folder; --max-running 8): `--streams` long streams keep every batch row busy and the rest
queued, while this scrapes the HTTP port's /metrics every 50 ms (the router's interval) and the admin
port's alongside; it prints p50, p99 and max per port. The streams run in a process of their own, so
that the scraper's timings hold the daemon's answer, not the wait for this process's GIL behind a
dozen SSE-parsing threads (a router scrapes from its own pod).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import openai

from tests.helpers.daemon import running_daemon
from tests.helpers.router_gauges import fetch, parse_router_gauges
from tests.routing.harness import percentile


def _load(http_url: str, streams: int, stop: Event) -> None:
    """The child process: `streams` threads each keep one long stream open until stop is set."""
    client = openai.OpenAI(base_url=http_url, api_key="unused", max_retries=0, timeout=300)
    model = client.models.list().data[0].id

    def one() -> None:
        while not stop.is_set():
            with client.completions.create(
                model=model, prompt="Open the settings app. " * 20, max_tokens=1500, stream=True,
                extra_body={"ignore_eos": True},
            ) as stream:  # fmt: skip
                for _ in stream:
                    if stop.is_set():
                        return

    threads = [threading.Thread(target=one, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()


def _vllm_args(folder: Path) -> list[str]:
    """The vLLM engine over the tiny Llama the vLLM tests use (a context of 2,048 tokens)."""
    from tests.vllm.support import TEST_VLLM_ARGS
    from tests.vllm.tiny_models import build_llama

    model = build_llama(folder / "llama")
    vllm_args = [arg for item in TEST_VLLM_ARGS for arg in ("--vllm-arg", item)]
    return ["--engine", "vllm", "--model", str(model), "--dtype", "bfloat16", *vllm_args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=12)
    parser.add_argument("--engine", choices=("builtin", "vllm"), default="builtin")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    with contextlib.ExitStack() as stack:
        engine_args = ["--max-running", "8", "--max-waiting", "64"]
        if args.engine == "vllm":
            engine_args += _vllm_args(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scrape-"))))
        daemon = stack.enter_context(running_daemon("--auth", "disabled", *engine_args, timeout=600))
        print(f"engine: {args.engine}")
        loader = spawn.Process(target=_load, args=(daemon.http_url, args.streams, stop))
        loader.start()
        http_root = f"http://127.0.0.1:{daemon.http_port}"
        took: dict[str, list[float]] = {"http": [], "admin": []}
        busy = 0
        filled = time.monotonic() + 120  # let the streams fill the batch (vLLM's first prefills are slow)
        while parse_router_gauges(*fetch(f"{http_root}/metrics")).running < 8 and time.monotonic() < filled:
            time.sleep(0.2)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            body, seconds = fetch(f"{http_root}/metrics")
            gauges = parse_router_gauges(body, seconds)
            busy += int(gauges.running >= 8)
            took["http"].append(seconds)
            took["admin"].append(fetch(f"{daemon.admin_url}/metrics")[1])
            time.sleep(0.05)
        stop.set()
        loader.join(60)
        if loader.is_alive():
            loader.kill()
    print(f"{len(took['http'])} scrapes per port over {args.seconds:g} s, {args.streams} streams,"
          f" all 8 batch rows busy in {busy} of them")  # fmt: skip
    print("| port | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for port, values in took.items():
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        print(f"| {port} | {p50:.2f} | {p99:.2f} | {max(values) * 1000:.2f} |")


if __name__ == "__main__":
    main()
