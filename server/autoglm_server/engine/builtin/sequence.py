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

    Tokens gather here between hand-offs to the event loop: a step only records its token and checks
    the token-level stops, and `take` builds one delta of everything since the last one. A request
    without stop strings is detokenized only then, all its gathered tokens at once; one with stop
    strings is detokenized at every step, since its text decides when it ends.
    """

    def __init__(
        self,
        request: GenerationRequest,
        detokenizers: DetokenizerFactory,
        eos_token_ids: frozenset[int],
        context_limit: int,
        sampling: RowSampling,
        admitted_at: float,
        cached_tokens: int = 0,
    ) -> None:
        self.request = request
        self.cached_tokens = cached_tokens  # prompt tokens whose K/V came from the prefix cache
        self.sampling = sampling
        self.generated: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.admitted_at = admitted_at
        self.first_token_at: float | None = None
        self._eos = frozenset() if request.ignore_eos else eos_token_ids
        self._stop_ids = frozenset(request.stop_token_ids)
        # The output length at which the request ends: max_new_tokens, or the context's end first.
        self._limit = min(request.max_new_tokens, context_limit - len(request.prompt_token_ids))
        self._observe = sampling.options.repetition_penalty != 1.0 or sampling.counts_output
        self._detok = detokenizers.create(request.prompt_token_ids)
        self._stops = StopMatcher(request.stop_strings)
        self._text_stops = any(request.stop_strings)
        # Gathered since the last delta: the sampled tokens, their logprobs, and either their text
        # (with stop strings) or the tokens still to detokenize (without).
        self._ids: list[int] = []
        self._logprobs: list[TokenLogprob] = []
        self._text: list[str] = []
        self._undecoded: list[int] = []

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def pending(self) -> bool:
        """Whether tokens gathered since the last delta wait to be taken."""
        return bool(self._ids)

    def append(self, token_id: int, logprob: TokenLogprob | None, now: float) -> GenerationDelta | None:
        """Record one sampled token; returns the request's last delta when it is done, else None."""
        if self.first_token_at is None:
            self.first_token_at = now
        self.generated.append(token_id)
        if self._observe:
            self.sampling.observe(token_id)
        self._ids.append(token_id)
        if logprob is not None:
            self._logprobs.append(logprob)
        if token_id in self._eos:
            return self._finish(self.take(), FinishReason.EOS_TOKEN)
        if token_id in self._stop_ids:
            return self._finish(self.take(), FinishReason.STOP_TOKEN)
        if self._text_stops:
            text, matched = self._stops.feed(self._detok.step(token_id))
            self._text.append(text)
            if matched is not None:
                delta = self.take()
                delta.matched_stop = matched
                return self._finish(delta, FinishReason.STOP_SEQUENCE, flush=False)
        else:
            self._undecoded.append(token_id)
        produced = len(self.generated)
        if produced >= self._limit:
            reason = FinishReason.LENGTH if produced >= self.request.max_new_tokens else FinishReason.CONTEXT_LENGTH
            return self._finish(self.take(), reason)
        return None

    def take(self) -> GenerationDelta:
        """The tokens (and their text) gathered since the last delta, as one delta."""
        if self._undecoded:
            self._text.append(self._detok.steps(self._undecoded))
            self._undecoded = []
        delta = GenerationDelta(text="".join(self._text), token_ids=self._ids, logprobs=self._logprobs)
        self._ids, self._logprobs, self._text = [], [], []
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
            cached_prompt_tokens=self.cached_tokens,
        )

    def service_time_s(self) -> float:
        return time.monotonic() - self.admitted_at
