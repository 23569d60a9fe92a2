"""Print the latency of GET /metrics on the HTTP port while the daemon is under full load (docs/metrics.md).

    .venv/bin/python -m tests.routing.bench_scrape [--seconds 20] [--streams 12]

One daemon (built-in engine, builtin:tiny, --max-running 8): `--streams` long streams keep every batch
row busy and the rest queued, while this scrapes the HTTP port's /metrics every 50 ms (the router's
interval) and the admin port's alongside; it prints p50, p99 and max per port. The streams run in a
process of their own, so that the scraper's timings hold the daemon's answer, not the wait for this
process's GIL behind a dozen SSE-parsing threads (a router scrapes from its own pod).
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from multiprocessing.synchronize import Event

import openai

from tests.helpers.daemon import running_daemon
from tests.helpers.router_gauges import fetch, parse_router_gauges
from tests.routing.harness import percentile


def _load(http_url: str, streams: int, stop: Event) -> None:
    """The child process: `streams` threads each keep one long stream open until stop is set."""
    client = openai.OpenAI(base_url=http_url, api_key="unused", max_retries=0, timeout=300)

    def one() -> None:
        while not stop.is_set():
            with client.completions.create(
                model="builtin:tiny", prompt="Open the settings app. " * 20, max_tokens=1500, stream=True,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=12)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    with running_daemon("--auth", "disabled", "--max-running", "8", "--max-waiting", "64") as daemon:
        loader = spawn.Process(target=_load, args=(daemon.http_url, args.streams, stop))
        loader.start()
        http_root = f"http://127.0.0.1:{daemon.http_port}"
        took: dict[str, list[float]] = {"http": [], "admin": []}
        busy = 0
        time.sleep(2.0)  # let the streams fill the batch
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
