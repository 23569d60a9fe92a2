"""One running request inside the engine thread: its output so far and when it stops."""

from __future__ import annotations

import time

from autoglm_server.engine.builtin.detokenize import DetokenizerFactory
from autoglm_server.engine.builtin.sampling import RowSampling
from autoglm_server.engine.builtin.stops import StopMatcher
from autoglm_server.engine.types import (
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    TokenLogprob,
    Usage,
)


class Sequence:
    """Turns the tokens sampled for one request into deltas, and decides when it is finished.

    Every sampled token is reported in `token_ids` (an EOS or stop token too, as generate() returns
    it); the text never contains special tokens, a stop token's text, or a stop string.
    """

    def __init__(
        self,
        request: GenerationRequest,
        detokenizers: DetokenizerFactory,
        eos_token_ids: frozenset[int],
        context_limit: int,
        sampling: RowSampling,
        admitted_at: float,
    ) -> None:
        self.request = request
        self.sampling = sampling
        self.generated: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.admitted_at = admitted_at
        self.first_token_at: float | None = None
        self._eos = frozenset() if request.ignore_eos else eos_token_ids
        self._context_limit = context_limit
        self._detok = detokenizers.create(request.prompt_token_ids)
        self._stops = StopMatcher(request.stop_strings)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def append(self, token_id: int, logprob: TokenLogprob | None, now: float) -> GenerationDelta:
        """Record one sampled token; the delta says what to emit and whether the request is done."""
        if self.first_token_at is None:
            self.first_token_at = now
        self.generated.append(token_id)
        self.sampling.observe(token_id)
        delta = GenerationDelta(token_ids=[token_id], logprobs=[logprob] if logprob is not None else [])
        if token_id in self._eos:
            return self._finish(delta, FinishReason.EOS_TOKEN)
        if token_id in self.request.stop_token_ids:
            return self._finish(delta, FinishReason.STOP_TOKEN)
        delta.text, matched = self._stops.feed(self._detok.step(token_id))
        if matched is not None:
            delta.matched_stop = matched
            return self._finish(delta, FinishReason.STOP_SEQUENCE, flush=False)
        if len(self.generated) >= self.request.max_new_tokens:
            return self._finish(delta, FinishReason.LENGTH)
        if len(self.request.prompt_token_ids) + len(self.generated) >= self._context_limit:
            return self._finish(delta, FinishReason.CONTEXT_LENGTH)
        return delta

    def _finish(self, delta: GenerationDelta, reason: FinishReason, flush: bool = True) -> GenerationDelta:
        if flush:
            # The stream ends: incomplete characters and held-back text go out now (unless they
            # complete a stop string, which then wins).
            text, matched = self._stops.feed(self._detok.flush(), final=True)
            delta.text += text
            if matched is not None:
                reason, delta.matched_stop = FinishReason.STOP_SEQUENCE, matched
        return self.close(delta, reason)

    def close(self, delta: GenerationDelta, reason: FinishReason) -> GenerationDelta:
        """Mark the request finished with `reason`, attaching usage to `delta`."""
        self.finish_reason = reason
        delta.finish_reason = reason
        delta.usage = self.usage()
        return delta

    def usage(self) -> Usage:
        arrival = self.request.arrival_time
        return Usage(
            prompt_tokens=len(self.request.prompt_token_ids),
            completion_tokens=len(self.generated),
            queue_time_s=max(0.0, self.admitted_at - arrival),
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - arrival,
        )

    def service_time_s(self) -> float:
        return time.monotonic() - self.admitted_at
