"""What tracing and metrics cost in throughput: the real daemon with both on vs both off.

    python -m tests.observability.bench_overhead [--concurrency 32] [--rounds 30] [--json out.json]

Two daemons run side by side on the same model: "off" (no OTLP endpoint, --no-metrics-enabled)
and "on" (every request traced, 100% sampled, exported over OTLP/gRPC to a receiver started here;
metrics recorded and /metrics scraped after each run). Access logs are on in both, so only traces
and metrics differ. Runs alternate in ABBA order (off on, on off, ...) with the same requests, so
drift on a shared machine hits both alike; each round's on/off ratio of tokens/s is one sample and
the median over the rounds is the figure. One daemon idles while the other is measured.

The receiver keeps the raw export requests and counts their spans at the end
(tests.helpers.otlp_receiver.OtlpSink): in production the collector runs elsewhere, and parsing
while measuring would take CPU from the daemon on a small machine. `--parse-spans` uses the
parsing receiver of the tests instead.

A second figure is sturdier against other work on a shared machine: the daemon's own CPU time
(user + system, from /proc) per generated token, on vs off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from autoglm_client.loadgen import LoadReport, LoadRequest, make_requests, run_load
from autoglm_server import names
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.otlp_receiver import OtlpReceiver, OtlpSink, otlp_receiver, otlp_sink

GENERATE = "/autoglm.v1.GenerationService/Generate"
TINY_VOCAB = 256  # a safe id range for any builtin model
SPANS_PER_REQUEST = 4  # the RPC span and its queue, prefill and decode children


@dataclass
class Arm:
    """One configuration under test and its runs."""

    name: str
    daemon: Daemon
    reports: list[LoadReport] = field(default_factory=list)
    cpu_ms_per_token: list[float] = field(default_factory=list)

    def tokens_per_s(self) -> list[float]:
        return [report.tokens_per_s for report in self.reports]


@dataclass
class Result:
    """The figures of one benchmark (also written as JSON)."""

    command: str
    machine: str
    model: str
    concurrency: int
    requests_per_run: int
    prompt_tokens: int
    max_new_tokens: int
    rounds: int
    off_tokens_per_s: list[float]
    on_tokens_per_s: list[float]
    ratios: list[float]
    off_cpu_ms_per_token: list[float]
    on_cpu_ms_per_token: list[float]
    off_ttft_p50_ms: float
    on_ttft_p50_ms: float
    off_itl_p50_ms: float
    on_itl_p50_ms: float
    spans_received: int
    ok_counted_by_metrics: float

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def median_ratio_interval(self, resamples: int = 2000, seed: int = 7) -> tuple[float, float]:
        """A 95% bootstrap interval of the median ratio: how far the noise could move it."""
        rng = random.Random(seed)
        medians = sorted(statistics.median(rng.choices(self.ratios, k=len(self.ratios))) for _ in range(resamples))
        return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.on_cpu_ms_per_token) / statistics.median(self.off_cpu_ms_per_token)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32, help="streams in flight (closed loop)")
    parser.add_argument("--requests", type=int, default=64, help="requests per run")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length of every request")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--rounds", type=int, default=30, help="rounds; each runs both daemons once")
    parser.add_argument("--model", default="builtin:tiny", help="--model of both daemons")
    parser.add_argument("--device", default="auto", help="--device of both daemons")
    parser.add_argument("--torch-threads", type=int, default=1, help="--torch-threads of both daemons")
    parser.add_argument("--parse-spans", action="store_true", help="parse spans as they arrive (costs CPU)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def daemon_args(args: argparse.Namespace, *extra: str) -> tuple[str, ...]:
    return (
        "--auth", "disabled",
        "--model", args.model,
        "--device", args.device,
        "--torch-threads", str(args.torch_threads),
        "--max-running", str(max(32, args.concurrency)),
        "--log-format", "json",
        *extra,
    )  # fmt: skip


@contextmanager
def two_daemons(args: argparse.Namespace, receiver: OtlpReceiver | OtlpSink) -> Iterator[tuple[Arm, Arm]]:
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "autoglm-bench"}
    with ExitStack() as stack:
        off = stack.enter_context(running_daemon(*daemon_args(args, "--no-metrics-enabled"), env={}))
        on = stack.enter_context(running_daemon(*daemon_args(args), env=traced))
        yield Arm("off", off), Arm("on", on)


def scrape_ok(daemon: Daemon) -> float:
    """Generate calls the daemon counted as OK (proves the metrics were recorded)."""
    with urllib.request.urlopen(f"{daemon.admin_url}{names.METRICS_PATH}", timeout=10) as reply:
        body = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "autoglm_requests_total"
        and sample.labels.get("method") == GENERATE
        and sample.labels.get("code") == "OK"
    )


def measure(arm: Arm, requests: Sequence[LoadRequest], concurrency: int) -> LoadReport:
    pid = arm.daemon.process.pid
    cpu_before = cpu_seconds(pid)
    report = asyncio.run(run_load(arm.daemon.target, requests, concurrency=concurrency, timeout=600))
    cpu_used = cpu_seconds(pid) - cpu_before
    if report.errors or report.completed != len(requests):
        raise SystemExit(f"{arm.name}: {report.completed}/{len(requests)} completed, errors {report.errors}")
    if arm.name == "on":
        scrape_ok(arm.daemon)  # as Prometheus would, every 15 s or so
    arm.cpu_ms_per_token.append(cpu_used * 1000 / max(report.generated_tokens, 1))
    return report


def warm_up_count(args: argparse.Namespace) -> int:
    return min(args.requests, args.concurrency)


def run_rounds(args: argparse.Namespace, off: Arm, on: Arm) -> list[float]:
    requests = make_requests(
        args.requests,
        prompt_tokens=(args.prompt_tokens, args.prompt_tokens),
        max_new_tokens=(args.max_new_tokens, args.max_new_tokens),
        vocab_size=TINY_VOCAB,
        seed=1,
    )
    for arm in (off, on):  # connections, allocator and caches warm before the clock counts
        measure(arm, requests[: warm_up_count(args)], args.concurrency)
        arm.reports.clear()
        arm.cpu_ms_per_token.clear()
    ratios = []
    for index in range(args.rounds):
        for arm in (off, on) if index % 2 == 0 else (on, off):  # ABBA: linear drift cancels
            arm.reports.append(measure(arm, requests, args.concurrency))
        ratio = on.reports[-1].tokens_per_s / off.reports[-1].tokens_per_s
        ratios.append(ratio)
        print(
            f"round {index + 1:2}:"
            f"  off {off.reports[-1].tokens_per_s:7.1f} tok/s {off.cpu_ms_per_token[-1]:.3f} cpu-ms/tok"
            f"  on {on.reports[-1].tokens_per_s:7.1f} tok/s {on.cpu_ms_per_token[-1]:.3f} cpu-ms/tok"
            f"  on/off {ratio:.4f}",
            flush=True,
        )
    return ratios


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def summarize(args: argparse.Namespace, off: Arm, on: Arm, ratios: list[float], counts: tuple[int, float]) -> Result:
    return Result(
        command="python -m tests.observability.bench_overhead " + " ".join(sys.argv[1:]),
        machine=machine(),
        model=args.model,
        concurrency=args.concurrency,
        requests_per_run=args.requests,
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        rounds=args.rounds,
        off_tokens_per_s=off.tokens_per_s(),
        on_tokens_per_s=on.tokens_per_s(),
        ratios=ratios,
        off_cpu_ms_per_token=off.cpu_ms_per_token,
        on_cpu_ms_per_token=on.cpu_ms_per_token,
        off_ttft_p50_ms=statistics.median(r.ttft_ms.p50 for r in off.reports),
        on_ttft_p50_ms=statistics.median(r.ttft_ms.p50 for r in on.reports),
        off_itl_p50_ms=statistics.median(r.itl_ms.p50 for r in off.reports),
        on_itl_p50_ms=statistics.median(r.itl_ms.p50 for r in on.reports),
        spans_received=counts[0],
        ok_counted_by_metrics=counts[1],
    )


def print_summary(result: Result) -> None:
    print()
    print(f"machine:      {result.machine}")
    print(
        f"load:         {result.model}, {result.concurrency} streams, {result.requests_per_run} requests x"
        f" ({result.prompt_tokens} prompt + {result.max_new_tokens} new tokens) per run, {result.rounds} rounds"
    )
    for arm, values in (("off", result.off_tokens_per_s), ("on", result.on_tokens_per_s)):
        print(
            f"{arm:<3} tokens/s: median {statistics.median(values):7.1f}  runs " + " ".join(f"{v:.0f}" for v in values)
        )
    low, high = result.median_ratio_interval()
    print(
        f"on/off ratio: median {result.median_ratio:.4f}  (95% bootstrap interval {low:.4f} .. {high:.4f};"
        f" rounds ranged {min(result.ratios):.4f} .. {max(result.ratios):.4f})"
    )
    print(f"overhead:     {(1 - result.median_ratio) * 100:.2f}% fewer tokens/s with tracing + metrics on")
    print(
        f"daemon CPU:   off {statistics.median(result.off_cpu_ms_per_token):.3f} ms/token"
        f"  on {statistics.median(result.on_cpu_ms_per_token):.3f} ms/token"
        f"  on/off {result.cpu_ratio:.4f} (medians)"
    )
    print(f"TTFT p50:     off {result.off_ttft_p50_ms:.1f} ms  on {result.on_ttft_p50_ms:.1f} ms")
    print(f"ITL p50:      off {result.off_itl_p50_ms:.2f} ms  on {result.on_itl_p50_ms:.2f} ms")
    print(f"checks:       {result.spans_received} spans received, {result.ok_counted_by_metrics:.0f} OK counted")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with ExitStack() as stack:
        receiver: OtlpReceiver | OtlpSink = (
            stack.enter_context(otlp_receiver()) if args.parse_spans else stack.enter_context(otlp_sink())
        )
        off, on = stack.enter_context(two_daemons(args, receiver))
        ratios = run_rounds(args, off, on)
        ok_counted = scrape_ok(on.daemon)
        on.daemon.signal(signal.SIGTERM)  # its shutdown flushes the spans still queued
        on.daemon.wait(60)
        # Every measured request's spans, plus the warm-up's.
        expected = SPANS_PER_REQUEST * (args.requests * args.rounds + warm_up_count(args))
        if isinstance(receiver, OtlpSink):
            spans = receiver.wait_for_span_count(expected)
        else:
            spans = len(receiver.wait_for_spans(expected, timeout=30))
        result = summarize(args, off, on, ratios, (spans, ok_counted))
    print_summary(result)
    print(f"wall time:    {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    # A run that lost spans or counts measured less work than it claims: say so, and fail.
    calls = args.requests * args.rounds + warm_up_count(args)
    if result.spans_received < expected or result.ok_counted_by_metrics != calls:
        print(f"INVALID: expected {expected} spans and {calls} OK calls counted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
