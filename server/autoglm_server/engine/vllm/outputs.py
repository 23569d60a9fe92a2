"""Domain requests into vLLM's SamplingParams, and vLLM's RequestOutput deltas back into ours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind

from autoglm_server.engine.types import FinishReason, GenerationDelta, GenerationRequest, TokenLogprob, Usage


def sampling_params(request: GenerationRequest, max_tokens: int) -> SamplingParams:
    """vLLM's parameters for one request; `max_tokens` is already clamped to the context left."""
    options = request.sampling
    return SamplingParams(
        n=1,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,  # 0 turns it off in both APIs
        repetition_penalty=options.repetition_penalty,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        seed=options.seed,
        stop=list(request.stop_strings) or None,
        stop_token_ids=sorted(request.stop_token_ids) or None,
        include_stop_str_in_output=False,
        ignore_eos=request.ignore_eos,
        max_tokens=max_tokens,
        logprobs=request.top_logprobs if request.logprobs else None,
        output_kind=RequestOutputKind.DELTA,
    )


@dataclass(slots=True)
class OutputState:
    """What one request's stream remembers between deltas."""

    request: GenerationRequest
    eos_token_ids: frozenset[int]
    context_clamped: bool  # max_tokens was cut to the context left: a length end is CONTEXT_LENGTH
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


def finish_reason(state: OutputState, reason: str | None, stop_reason: int | str | None) -> FinishReason | None:
    """vLLM's (finish_reason, stop_reason) as ours; None while the request runs on."""
    if reason is None:
        return None
    if reason == "length":
        return FinishReason.CONTEXT_LENGTH if state.context_clamped else FinishReason.LENGTH
    if reason == "abort":
        return FinishReason.CANCELLED
    if isinstance(stop_reason, str):
        return FinishReason.STOP_SEQUENCE
    # vLLM stops on the generation config's extra EOS ids through its stop-token list: those are EOS.
    if stop_reason is None or (stop_reason in state.eos_token_ids and stop_reason not in state.request.stop_token_ids):
        return FinishReason.EOS_TOKEN
    return FinishReason.STOP_TOKEN


def _logprobs(entries: Iterable[Mapping[int, Any]] | None, token_ids: list[int], top: int) -> list[TokenLogprob]:
    if entries is None:
        return []
    result: list[TokenLogprob] = []
    for token_id, position in zip(token_ids, entries, strict=False):
        chosen = position[token_id]
        ranked = sorted(
            ((entry.rank, tid, entry.logprob) for tid, entry in position.items() if entry.rank), key=lambda x: x[0]
        )
        alternatives = tuple((tid, float(lp)) for rank, tid, lp in ranked if rank <= top)
        result.append(TokenLogprob(token_id=token_id, logprob=float(chosen.logprob), top=alternatives))
    return result


def to_delta(state: OutputState, output: Any) -> GenerationDelta:
    """One RequestOutput (DELTA kind) as a GenerationDelta; the last carries finish reason and usage."""
    completion = output.outputs[0]
    token_ids = list(completion.token_ids)
    state.completion_tokens += len(token_ids)
    if output.prompt_token_ids is not None:
        state.prompt_tokens = len(output.prompt_token_ids)
    # vLLM fixes num_cached_tokens when it first schedules the request; a DELTA output may still
    # leave it unset (None), so keep the largest value any delta reported.
    cached = getattr(output, "num_cached_tokens", None)
    if cached:
        state.cached_prompt_tokens = max(state.cached_prompt_tokens, int(cached))
    delta = GenerationDelta(text=completion.text, token_ids=token_ids)
    if state.request.logprobs:
        delta.logprobs = _logprobs(completion.logprobs, token_ids, state.request.top_logprobs)
    reason = finish_reason(state, completion.finish_reason, completion.stop_reason)
    if reason is not None:
        delta.finish_reason = reason
        if reason is FinishReason.STOP_SEQUENCE:
            delta.matched_stop = str(completion.stop_reason)
        delta.usage = usage(state, output.metrics)
    return delta


def usage(state: OutputState, metrics: Any) -> Usage:
    """Counts and timings; vLLM's timestamps are time.monotonic() values, as the request's arrival is."""
    arrival = state.request.arrival_time
    queue_time = 0.0
    ttft: float | None = None
    if metrics is not None:
        scheduled = getattr(metrics, "scheduled_ts", 0.0) or 0.0
        first = getattr(metrics, "first_token_ts", 0.0) or 0.0
        queue_time = max(0.0, scheduled - arrival) if scheduled else 0.0
        ttft = max(0.0, first - arrival) if first else None
    return Usage(
        prompt_tokens=state.prompt_tokens,
        completion_tokens=state.completion_tokens,
        queue_time_s=queue_time,
        time_to_first_token_s=ttft,
        cached_prompt_tokens=state.cached_prompt_tokens,
    )
