"""Incremental detokenization: turn one new token at a time into the text it completes.

Decoding a token alone is wrong in two ways: a multi-byte UTF-8 character split across tokens decodes
to U+FFFD until its last byte arrives, and SentencePiece-style tokenizers drop the leading space of a
sequence's first token. So each step decodes a short window that starts a few tokens back (the prompt's
last tokens at first) and emits only what the window gained, and only once it no longer ends in an
incomplete character.
"""

from __future__ import annotations

from typing import Any

# Prompt tokens decoded before the first generated token, so that its leading space survives.
_CONTEXT_TOKENS = 6
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text deltas for a stream of token ids; their concatenation is the decoded output."""

    def __init__(self, tokenizer: Any, prompt_token_ids: tuple[int, ...] | list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0  # window start
        self._read = len(self._ids)  # tokens before this are already emitted
        self._prefix_text = self._decode(self._prefix, self._read)

    def _decode(self, start: int, end: int | None = None) -> str:
        text: str = self._tokenizer.decode(self._ids[start:end], skip_special_tokens=True)
        return text

    def step(self, token_id: int) -> str:
        """Add one token; return the complete characters it made available (may be "")."""
        self._ids.append(token_id)
        text = self._decode(self._prefix)
        if len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT):
            return ""
        delta = text[len(self._prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self._prefix_text = self._decode(self._prefix, self._read)
        return delta

    def flush(self) -> str:
        """The rest of the text at the end of the stream (an incomplete character decodes as U+FFFD)."""
        text = self._decode(self._prefix)
        delta = text[len(self._prefix_text) :] if len(text) > len(self._prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self._prefix_text = ""
        return delta
