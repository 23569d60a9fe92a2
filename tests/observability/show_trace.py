"""One request's trace, as an operator would see it in Jaeger: a manual check of the tracing.

    python -m tests.observability.show_trace [--prompt TEXT] [--max-new-tokens N]

Starts an OTLP/gRPC receiver (tests.helpers.otlp_receiver) and the real daemon exporting to it,
sends one Generate call inside a client span (its traceparent travels in the gRPC metadata), waits
for the spans of that trace and prints them as a tree: name, duration, key attributes and events.
The client span is exported to the same receiver, so the tree starts at the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence

import grpc
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.helpers.daemon import running_daemon
from tests.helpers.otlp_receiver import ReceivedSpan, otlp_receiver

# What is worth a glance, in this order; the rest is in the receiver.
KEY_ATTRIBUTES = (
    "rpc.grpc.status_code",
    "autoglm.request_id",
    "autoglm.tenant",
    "gen_ai.request.model",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "autoglm.queue_time_s",
    "autoglm.time_to_first_token_s",
    "autoglm.rejection_reason",
)
KEY_RESOURCE = ("service.name", "service.instance.id", "autoglm.model.version", "service.version")
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _ms(nanos: int) -> str:
    return f"{nanos / 1e6:.2f} ms"


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def _describe(span: ReceivedSpan, root_start: int) -> list[str]:
    status = {0: "", 1: " status=OK", 2: f" status=ERROR {span.status_message!r}"}[span.status_code]
    head = (
        f"{span.name} [{KINDS.get(span.kind, span.kind)}] {_ms(span.end_unix_nano - span.start_unix_nano)}"
        f" (starts +{_ms(span.start_unix_nano - root_start)}) span_id={span.span_id}{status}"
    )
    lines = [head]
    attrs = [f"{key}={_value(span.attributes[key])}" for key in KEY_ATTRIBUTES if key in span.attributes]
    if attrs:
        lines.append("  " + " ".join(attrs))
    for event in span.events:
        lines.append(f"  event {event.name} at +{_ms(event.time_unix_nano - span.start_unix_nano)}")
    return lines


def span_tree(spans: Iterable[ReceivedSpan]) -> list[str]:
    """The spans of one trace as indented lines, children under their parent in start order."""
    ordered = sorted(spans, key=lambda span: span.start_unix_nano)
    if not ordered:
        return []
    ids = {span.span_id for span in ordered}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in ordered:
        parent = span.parent_span_id if span.parent_span_id in ids else ""
        children.setdefault(parent, []).append(span)
    root_start = ordered[0].start_unix_nano
    lines: list[str] = [f"trace {ordered[0].trace_id}"]

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            indent = "  " * depth + "└─ "
            first, *rest = _describe(span, root_start)
            lines.append(indent + first)
            lines.extend("  " * depth + "   " + line for line in rest)
            walk(span.span_id, depth + 1)

    walk("", 0)
    return lines


async def _call(target: str, prompt: str, max_new_tokens: int, tracer: trace.Tracer) -> str:
    with tracer.start_as_current_span("client Generate", kind=SpanKind.CLIENT) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)  # type: ignore[no-untyped-call]
            request = pb.GenerateRequest(text=prompt, max_new_tokens=max_new_tokens, request_id="show-trace-1")
            async for _ in stub.Generate(request, metadata=tuple(carrier.items())):
                pass
        return trace.format_trace_id(span.get_span_context().trace_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="The quick brown fox")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        client_provider = TracerProvider(resource=Resource.create({"service.name": "show-trace-client"}))
        client_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
        with running_daemon("--auth", "disabled", "--model-version", "manual-1", env=env) as daemon:
            trace_id = asyncio.run(
                _call(daemon.target, args.prompt, args.max_new_tokens, client_provider.get_tracer("show"))
            )
            spans = receiver.wait_for_spans(5, lambda span: span.trace_id == trace_id)
        client_provider.shutdown()
        server = next(span for span in spans if span.kind == 2)
        print("daemon resource: " + " ".join(f"{k}={server.resource[k]}" for k in KEY_RESOURCE if k in server.resource))
        print("\n".join(span_tree(spans)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
