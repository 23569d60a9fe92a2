"""OpenAI response bodies and stream chunks, built from the engine's deltas.

Logprobs name each token as `token_id:N` (as vLLM's --return-tokens-as-token-ids does): the engine
reports ids, and a single token's text is often not a whole character.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from autoglm_server.engine.types import FinishReason, GenerationDelta, TokenLogprob, Usage

_STOPPED = {FinishReason.STOP_SEQUENCE, FinishReason.STOP_TOKEN, FinishReason.EOS_TOKEN}


def finish_reason(reason: FinishReason | None) -> str | None:
    """OpenAI's finish_reason: stop (a stop string, stop token or EOS) or length."""
    if reason is None:
        return None
    return "stop" if reason in _STOPPED else "length"


def usage_body(usage: Usage | None) -> dict[str, object] | None:
    """OpenAI's usage object; prompt_tokens_details.cached_tokens is always sent, 0 without a cache."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def _token(token_id: int) -> str:
    return f"token_id:{token_id}"


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, object]:
    return {
        "content": [
            {
                "token": _token(item.token_id),
                "logprob": item.logprob,
                "bytes": None,
                "top_logprobs": [{"token": _token(t), "logprob": lp, "bytes": None} for t, lp in item.top],
            }
            for item in items
        ]
    }


def completion_logprobs(items: list[TokenLogprob]) -> dict[str, object]:
    return {
        "tokens": [_token(item.token_id) for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [{_token(t): lp for t, lp in item.top} for item in items],
        "text_offset": None,
    }


def sse(payload: dict[str, object] | str) -> bytes:
    """One server-sent event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


SSE_DONE = sse("[DONE]")


@dataclass(slots=True)
class Envelope:
    """What every body and chunk of one response repeats."""

    id: str
    created: int
    model: str
    chat: bool

    def _base(self, stream: bool) -> dict[str, object]:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: GenerationDelta, *, first: bool) -> dict[str, object]:
        """A stream chunk carrying delta's text (and its finish reason, when it is the last)."""
        choice: dict[str, object] = {"index": 0, "finish_reason": finish_reason(delta.finish_reason)}
        if self.chat:
            content: dict[str, object] = {"content": delta.text}
            if first:
                content = {"role": "assistant", **content}
            choice["delta"] = content
            choice["logprobs"] = chat_logprobs(delta.logprobs) if delta.logprobs else None
        else:
            choice["text"] = delta.text
            choice["logprobs"] = completion_logprobs(delta.logprobs) if delta.logprobs else None
        return {**self._base(True), "choices": [choice]}

    def usage_chunk(self, usage: Usage | None) -> dict[str, object]:
        """The extra last chunk that stream_options.include_usage asks for."""
        return {**self._base(True), "choices": [], "usage": usage_body(usage)}

    def body(self, whole: GenerationDelta, logprobs: bool) -> dict[str, object]:
        """The non-streaming response: every delta merged into `whole`."""
        choice: dict[str, object] = {"index": 0, "finish_reason": finish_reason(whole.finish_reason)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": whole.text}
            choice["logprobs"] = chat_logprobs(whole.logprobs) if logprobs else None
        else:
            choice["text"] = whole.text
            choice["logprobs"] = completion_logprobs(whole.logprobs) if logprobs else None
        return {**self._base(False), "choices": [choice], "usage": usage_body(whole.usage)}
