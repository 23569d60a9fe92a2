"""CPU that tracing and metrics add to one Generate call, measured in-process without the model.

    python -m tests.observability.bench_observer_cost [--requests 2000] [--tokens 64] [--repeats 5]

The end-to-end comparison (bench_overhead) measures what matters but, on a small shared machine,
its noise can exceed the effect. This isolates the effect: the work that the daemon does per
Generate call for observability (the tracing interceptor's server span, the observer's hooks for
every token, the phase spans, the metrics, the export of the spans over OTLP/gRPC to a receiver
started here) is replayed `--requests` times, and the process CPU time (all threads, the span
exporter's included) is divided by the calls. Configurations alternate, repeated `--repeats`
times; the median is printed. Divide by the daemon's CPU per call (bench_overhead prints CPU per
token) to get the share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import grpc
from opentelemetry import trace

from autoglm_server.engine.types import FinishReason, GenerationDelta, GenerationRequest, SamplingOptions, Usage
from autoglm_server.observability.metrics import Metrics
from autoglm_server.observability.observer import make_observer_factory
from autoglm_server.observability.settings import ObservabilitySettings
from autoglm_server.observability.tracing import TracingRuntime, setup_tracing
from tests.helpers.otlp_receiver import OtlpSink, otlp_sink

METHOD = "/autoglm.v1.GenerationService/Generate"
CONFIGS = (("off", False, False), ("metrics", True, False), ("tracing", False, True), ("both", True, True))
FLUSH_EVERY = 200  # requests between exports (keeps the span queue under its default 2048)


def one_call(runtime: TracingRuntime, metrics: Metrics | None, request: GenerationRequest, tokens: int) -> None:
    """What the interceptors and the servicer's observer do for one Generate call."""
    observers = make_observer_factory(metrics, runtime.tracer, model="builtin:tiny")
    span = runtime.tracer.start_span(
        METHOD.lstrip("/"),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": "autoglm.v1.GenerationService", "rpc.method": "Generate"},
    )
    with trace.use_span(span, end_on_exit=False):
        observer = observers("Generate")
        observer.on_admitted(request)
        for index in range(tokens):
            observer.on_tokens(GenerationDelta(text="a", token_ids=[index]))
        usage = Usage(len(request.prompt_token_ids), tokens, queue_time_s=0.001, time_to_first_token_s=0.002)
        observer.on_finished(GenerationDelta(finish_reason=FinishReason.LENGTH, usage=usage))
    if metrics is not None:
        metrics.rpc_finished(METHOD, grpc.StatusCode.OK)
    span.set_attribute("rpc.grpc.status_code", 0)
    span.end()


def cpu_us_per_call(sink: OtlpSink, metrics_on: bool, tracing_on: bool, requests: int, tokens: int) -> float:
    settings = ObservabilitySettings(otlp_endpoint=sink.endpoint if tracing_on else "")
    runtime = setup_tracing(settings, {"service.version": "bench"}, environ={})
    metrics = Metrics(model="builtin:tiny", version="bench") if metrics_on else None
    request = GenerationRequest(
        request_id="bench", prompt_token_ids=tuple(range(16)), max_new_tokens=tokens, sampling=SamplingOptions()
    )
    start = time.process_time()
    for index in range(requests):
        one_call(runtime, metrics, request, tokens)
        if runtime.provider is not None and index % FLUSH_EVERY == FLUSH_EVERY - 1:
            runtime.provider.force_flush(30_000)
    if runtime.provider is not None:
        runtime.provider.force_flush(30_000)
    used = time.process_time() - start
    runtime.shutdown()
    return used * 1e6 / requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--tokens", type=int, default=64, help="tokens streamed per call (one per chunk)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per configuration")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    with otlp_sink() as sink:
        for repeat in range(args.repeats):
            for name, metrics_on, tracing_on in CONFIGS if repeat % 2 == 0 else CONFIGS[::-1]:
                results[name].append(cpu_us_per_call(sink, metrics_on, tracing_on, args.requests, args.tokens))
        spans = sink.span_count()
    base = statistics.median(results["off"])
    print(f"{args.requests} calls x {args.tokens} tokens, {args.repeats} repeats; CPU per call (median):")
    for name, values in results.items():
        extra = statistics.median(values) - base
        print(
            f"  {name:<8} {statistics.median(values):7.1f} us/call  (+{extra:6.1f} us/call,"
            f" +{extra / args.tokens:5.2f} us/token over off)"
        )
    print(f"  {spans} spans received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
