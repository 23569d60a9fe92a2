"""Incremental detokenization: turn one new token at a time into the text it completes.

Decoding a token alone is wrong in two ways: a multi-byte UTF-8 character split across tokens decodes
to U+FFFD until its last byte arrives, and SentencePiece-style tokenizers drop the leading space of a
sequence's first token. So each step decodes a short window that starts a few tokens back (the prompt's
last tokens at first) and emits only what the window gained, and only once it no longer ends in an
incomplete character.

Byte-level tokenizers (GPT-2, Llama 3, Qwen2, builtin:tiny) take a faster and exact path: each token's
bytes go through Python's incremental UTF-8 decoder, so the concatenated deltas equal decoding all the
output at once even when the model produces invalid UTF-8.
"""

from __future__ import annotations

import codecs
from typing import Any, Protocol

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

    def steps(self, token_ids: list[int]) -> str:
        """Add several tokens; the text they made available (as many `step` calls would)."""
        return "".join([self.step(token_id) for token_id in token_ids])

    def flush(self) -> str:
        """The rest of the text at the end of the stream (an incomplete character decodes as U+FFFD)."""
        text = self._decode(self._prefix)
        delta = text[len(self._prefix_text) :] if len(text) > len(self._prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self._prefix_text = ""
        return delta


class Detokenizer(Protocol):
    def step(self, token_id: int) -> str: ...

    def steps(self, token_ids: list[int]) -> str: ...

    def flush(self) -> str: ...


class ByteDetokenizer:
    """Exact incremental decoding for byte-level tokenizers, from a token -> bytes table."""

    def __init__(self, table: list[bytes]) -> None:
        self._table = table
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def step(self, token_id: int) -> str:
        data = self._table[token_id] if 0 <= token_id < len(self._table) else b""
        text: str = self._decoder.decode(data)
        return text

    def steps(self, token_ids: list[int]) -> str:
        # One decoder call for a flush's tokens: the incremental decoder's output does not depend on
        # how its input is split.
        table, size = self._table, len(self._table)
        text: str = self._decoder.decode(b"".join([table[t] if 0 <= t < size else b"" for t in token_ids]))
        return text

    def flush(self) -> str:
        text: str = self._decoder.decode(b"", final=True)
        return text


def _byte_symbol_map() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character of each byte, inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {chr(b): b for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in printable:
            symbols[chr(256 + extra)] = byte
            extra += 1
    return symbols


def byte_table(tokenizer: Any) -> list[bytes] | None:
    """token id -> bytes when the tokenizer is byte-level (special tokens decode to nothing), else None."""
    try:
        from tokenizers import decoders

        if not isinstance(tokenizer.backend_tokenizer.decoder, decoders.ByteLevel):
            return None
    except (AttributeError, ImportError):
        return None
    symbols = _byte_symbol_map()
    special = set(tokenizer.all_special_ids)
    added = {i: tok.content for i, tok in tokenizer.added_tokens_decoder.items()}
    table: list[bytes] = []
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special or piece is None:
            table.append(b"")
        elif token_id in added:
            table.append(added[token_id].encode())
        elif all(ch in symbols for ch in piece):
            table.append(bytes(symbols[ch] for ch in piece))
        else:
            return None
    return table


class DetokenizerFactory:
    """Builds the right detokenizer for each request; the byte table is computed once per tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._table = byte_table(tokenizer)

    @property
    def byte_level(self) -> bool:
        return self._table is not None

    def create(self, prompt_token_ids: tuple[int, ...]) -> Detokenizer:
        if self._table is not None:
            return ByteDetokenizer(self._table)
        return IncrementalDetokenizer(self._tokenizer, prompt_token_ids)
