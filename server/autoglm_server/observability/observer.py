"""The real RequestObserver: one Generate call's metrics, span attributes, phase spans and log fields.

Phases as child spans, made after the fact: the engine reports a request's queue time and time to
first token in its last delta (Usage), so at the end the observer knows the three intervals
(queue wait, prefill, decode) and records them as child spans with their real start and end times.
Spans rather than events because these are intervals: Jaeger draws them as bars under the RPC and
can search by their duration, where an event is only a point. Made at the end, they cost three
span objects per request and nothing per token. The first token is a point: an event.
"""

from __future__ import annotations

import logging
import time

from opentelemetry import trace

from autoglm_server.engine.types import FinishReason, GenerationDelta, GenerationRequest
from autoglm_server.observability import log_context
from autoglm_server.observability.hooks import ObserverFactory, RequestObserver
from autoglm_server.observability.metrics import Metrics

prompt_logger = logging.getLogger("autoglm_server.prompts")

# OpenTelemetry GenAI semantic convention attributes.
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_MODEL = "gen_ai.request.model"
GEN_AI_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_TOP_P = "gen_ai.request.top_p"
GEN_AI_TOP_K = "gen_ai.request.top_k"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
REQUEST_ID = "autoglm.request_id"
TENANT = "autoglm.tenant"
SESSION = "autoglm.session_id"
REJECTION = "autoglm.rejection_reason"
QUEUE_TIME = "autoglm.queue_time_s"
TTFT = "autoglm.time_to_first_token_s"

# The request methods (gRPC's and the HTTP routes' names) that are a chat: GenAI's operation "chat".
CHAT_METHODS = frozenset({"Chat", "chat.completions"})

# Reasons that are not the server refusing work (counted under requests_total's code instead).
_NOT_REJECTIONS = frozenset({"cancelled"})


class _Observer:
    """Observes one Generate call; lives in the call's task."""

    __slots__ = (
        "_admitted",
        "_arrival",
        "_first_token",
        "_generated",
        "_last_token",
        "_mono0",
        "_operation",
        "_output",
        "_owner",
        "_prompt_text",
        "_request",
        "_series",
        "_span",
        "_summary",
        "_wall0_ns",
    )

    def __init__(self, owner: _Factory, protocol: str, operation: str) -> None:
        self._owner = owner
        self._operation = operation
        self._series = owner.metrics.for_protocol(protocol) if owner.metrics is not None else None
        self._span = trace.get_current_span()
        self._summary = log_context.call_summary()
        # One anchor converts the engine's monotonic times to span timestamps.
        self._mono0 = time.monotonic()
        self._wall0_ns = time.time_ns()
        self._request: GenerationRequest | None = None
        self._arrival = self._mono0
        self._admitted = False
        self._first_token: float | None = None
        self._last_token = 0.0
        self._generated = 0
        # Text is kept only under --log-prompts; otherwise neither prompt nor output is held.
        self._output: list[str] | None = [] if owner.log_prompts else None
        self._prompt_text = ""

    def _ns(self, monotonic: float) -> int:
        return self._wall0_ns + int((monotonic - self._mono0) * 1e9)

    def on_admitted(self, request: GenerationRequest, prompt_text: str = "") -> None:
        self._request = request
        if self._output is not None:
            self._prompt_text = prompt_text
        self._arrival = request.arrival_time
        self._admitted = True
        log_context.set_request_id(request.request_id)
        prompt_tokens = len(request.prompt_token_ids)
        metrics = self._series
        if metrics is not None:
            metrics.prompt_tokens.inc(prompt_tokens)
        if self._summary is not None:
            self._summary.prompt_tokens = prompt_tokens
            self._summary.generated_tokens = 0
            self._summary.session_id = request.session_id
        span = self._span
        if span.is_recording():
            span.set_attributes(
                {
                    GEN_AI_OPERATION: self._operation,
                    GEN_AI_MODEL: self._owner.model,
                    GEN_AI_MAX_TOKENS: request.max_new_tokens,
                    GEN_AI_TEMPERATURE: request.sampling.temperature,
                    GEN_AI_TOP_P: request.sampling.top_p,
                    GEN_AI_TOP_K: request.sampling.top_k,
                    GEN_AI_INPUT_TOKENS: prompt_tokens,
                    REQUEST_ID: request.request_id,
                    TENANT: request.tenant,
                }
            )
            if request.session_id:
                span.set_attribute(SESSION, request.session_id)

    def on_tokens(self, delta: GenerationDelta) -> None:
        count = len(delta.token_ids)
        if count == 0:
            return
        now = time.monotonic()
        metrics = self._series
        if self._first_token is None:
            self._first_token = now
            if metrics is not None:
                metrics.ttft.observe(now - self._arrival)
            if self._span.is_recording():
                self._span.add_event("gen_ai.first_token", timestamp=self._ns(now))
        elif metrics is not None:
            # A merged chunk (slow reader) spreads its interval over its tokens.
            gap = (now - self._last_token) / count
            for _ in range(count):
                metrics.itl.observe(gap)
        self._last_token = now
        self._generated += count
        if metrics is not None:
            metrics.generated_tokens.inc(count)
        if self._summary is not None:
            self._summary.generated_tokens = self._generated
        if self._output is not None:
            self._output.append(delta.text)

    def on_finished(self, delta: GenerationDelta) -> None:
        usage = delta.usage
        # Tolerates a servicer that does not pass the last delta's tokens to on_tokens as well.
        if delta.token_ids and usage is not None and usage.completion_tokens > self._generated:
            self.on_tokens(delta)
        now = time.monotonic()
        reason = delta.finish_reason.value if delta.finish_reason is not None else ""
        metrics = self._series
        if metrics is not None:
            metrics.duration.observe(now - self._arrival)
            if usage is not None:
                metrics.queue_time.observe(usage.queue_time_s)
        if self._summary is not None:
            self._summary.finish_reason = reason
        if self._span.is_recording():
            self._finish_span(delta, now)
        if self._output is not None:
            self._log_text(reason)

    def _finish_span(self, delta: GenerationDelta, now: float) -> None:
        span = self._span
        usage = delta.usage
        attributes: dict[str, object] = {GEN_AI_OUTPUT_TOKENS: self._generated}
        if delta.finish_reason is not None:
            attributes[GEN_AI_FINISH_REASONS] = (delta.finish_reason.value,)
        if usage is not None:
            attributes[QUEUE_TIME] = usage.queue_time_s
            if usage.time_to_first_token_s is not None:
                attributes[TTFT] = usage.time_to_first_token_s
            self._phase_spans(usage.queue_time_s, usage.time_to_first_token_s, now)
        span.set_attributes(attributes)  # type: ignore[arg-type]

    def _phase_spans(self, queue_s: float, ttft_s: float | None, now: float) -> None:
        # Clamped so the three phases always tile arrival..now, whatever clock skew the engine has.
        first_token = min(self._arrival + ttft_s, now) if ttft_s is not None else now
        queued_until = min(self._arrival + queue_s, first_token)
        parent = trace.set_span_in_context(self._span)
        tracer = self._owner.tracer
        for name, start, end in (
            ("queue", self._arrival, queued_until),
            ("prefill", queued_until, first_token),
            ("decode", first_token, now),
        ):
            child = tracer.start_span(f"autoglm.{name}", context=parent, start_time=self._ns(start))
            child.end(end_time=self._ns(end))

    def _log_text(self, reason: str) -> None:
        """The --log-prompts line: what was asked and what was answered (so far)."""
        request = self._request
        if request is None:
            return
        fields: dict[str, object] = {"prompt_text": self._prompt_text, "output_text": "".join(self._output or ())}
        if not self._prompt_text:  # the prompt came as token ids
            fields["prompt_token_ids"] = list(request.prompt_token_ids)
        fields["finish_reason"] = reason
        prompt_logger.info("generation text", extra=fields)

    def on_rejected(self, reason: str) -> None:
        metrics = self._series
        if metrics is not None and reason not in _NOT_REJECTIONS:
            metrics.rejected(reason)
        if self._summary is not None:
            self._summary.rejection = reason
            if reason == "cancelled":
                self._summary.finish_reason = FinishReason.CANCELLED.value
        if self._span.is_recording():
            self._span.set_attribute(REJECTION, reason)
            self._span.add_event("autoglm.rejected", {"reason": reason})
        if self._output is not None:
            self._log_text(reason)  # an admitted request that failed or was cancelled midway


class _Factory:
    __slots__ = ("log_prompts", "metrics", "model", "tracer")

    def __init__(self, metrics: Metrics | None, tracer: trace.Tracer, model: str, log_prompts: bool) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.model = model
        self.log_prompts = log_prompts

    def __call__(self, method: str, protocol: str = "grpc") -> RequestObserver:
        return _Observer(self, protocol, "chat" if method in CHAT_METHODS else "text_completion")


def make_observer_factory(
    metrics: Metrics | None,
    tracer: trace.Tracer | None = None,
    *,
    model: str = "",
    log_prompts: bool = False,
) -> ObserverFactory:
    """Observers that feed `metrics` (None: no metrics), span attributes, phase spans and the access log.

    The span is whatever span is current in the call's task (the TracingInterceptor's).
    """
    return _Factory(metrics, tracer if tracer is not None else trace.NoOpTracer(), model, log_prompts)
