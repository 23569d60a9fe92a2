"""The prefix cache: the K/V of prompt prefixes seen before, in blocks of BLOCK_TOKENS tokens.

An agent re-sends its whole conversation every step, so most of a prompt was prefilled before. After
a prefill the K/V of each full block of the prompt is copied out of the batch and kept, keyed by a
hash chain (the block's tokens and its parent block's key); at admission the longest chain of cached
blocks that the new prompt starts with is copied into the row's KV, and only the rest is prefilled.

Only text is cached: the reusable prefix stops at the prompt's first image placeholder token. An
image token stands for different pixels in different requests, and Open-AutoGLM's reusable part
(system prompt and earlier turns, whose screenshots it drops) is all text. A text prefix's K/V
depends on its tokens alone, with GLM-4.1V's 3-D rotary positions too: before the first image every
token's three positions equal its index.

Blocks are copied, never shared with a running row, so every block can be evicted at any time. Their
tokens count against the engine's KV budget together with the running rows' reservations
(`reserved + cached <= budget`), and the least recently used blocks go first when admission needs
the room: the cache never refuses a request or takes memory the uncached engine would have used. A
block's parent is touched after it whenever a chain is used, so LRU evicts a chain from its end and
never leaves a block unreachable behind an evicted parent.

Engine thread only, except the counters, which stats() reads.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# Tokens per block: a prompt's cacheable prefix is rounded down to a multiple of this.
BLOCK_TOKENS = 32

# One block's K/V: (keys, values) per model layer, each [kv_heads, BLOCK_TOKENS, head_dim].
BlockKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
# Reads a row's block back from a prefilled batch: (first token of the block) -> its K/V.
BlockReader = Callable[[int], BlockKV]

_ROOT = 0  # the parent key of a prompt's first block


@dataclass(slots=True)
class _Block:
    parent: int
    tokens: tuple[int, ...]
    kv: BlockKV


@dataclass(frozen=True, slots=True)
class Hit:
    """The cached prefix of one prompt: its blocks in order (their tokens = len(blocks) x block size)."""

    blocks: tuple[BlockKV, ...] = ()
    tokens: int = 0


class PrefixCache:
    """Blocks of prompt K/V by hash chain, least recently used first."""

    def __init__(self, stop_token: int | None = None, block_tokens: int = BLOCK_TOKENS) -> None:
        self.block_tokens = block_tokens
        self._stop_token = stop_token  # the image placeholder: nothing from it on is cached
        self._blocks: OrderedDict[int, _Block] = OrderedDict()
        # Cumulative prompt tokens looked up and found (vLLM's prefix_cache_queries / _hits).
        self.queries = 0
        self.hits = 0

    @property
    def tokens(self) -> int:
        """Tokens held (each block counts in full)."""
        return len(self._blocks) * self.block_tokens

    def cacheable(self, prompt: Sequence[int]) -> int:
        """Tokens of `prompt` that may be cached: up to its first image token, in whole blocks."""
        end = len(prompt)
        if self._stop_token is not None:
            with contextlib.suppress(ValueError):  # no image: the whole prompt
                end = prompt.index(self._stop_token)
        return end - end % self.block_tokens

    def _chain(self, prompt: Sequence[int], end: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """(key, parent key, tokens) of each block of prompt[:end] (end a multiple of the block size)."""
        out = []
        parent = _ROOT
        for start in range(0, end, self.block_tokens):
            tokens = tuple(prompt[start : start + self.block_tokens])
            key = hash((parent, tokens))
            out.append((key, parent, tokens))
            parent = key
        return out

    def lookup(self, prompt: Sequence[int]) -> Hit:
        """The longest cached prefix of `prompt` that leaves at least one token to prefill (the
        prefill's last position gives the first token's logits); counts the query and the hit."""
        self.queries += len(prompt)
        end = min(self.cacheable(prompt), len(prompt) - 1)
        end -= end % self.block_tokens
        found: list[tuple[int, _Block]] = []
        for key, parent, tokens in self._chain(prompt, end):
            block = self._blocks.get(key)
            if block is None or block.parent != parent or block.tokens != tokens:  # absent, or a hash collision
                break
            found.append((key, block))
        self._touch([key for key, _ in found])
        hit = Hit(tuple(block.kv for _, block in found), len(found) * self.block_tokens)
        self.hits += hit.tokens
        return hit

    def store(self, prompt: Sequence[int], cached: int, read: BlockReader, room: int) -> None:
        """Keep the blocks of `prompt` past its first `cached` tokens (those came from here), reading
        each with `read`, while the cache holds at most `room` tokens (least recently used go first).

        A block is inserted only once its K/V is copied whole, so a copy that runs out of memory
        leaves the cache as it was before that block.
        """
        chain = self._chain(prompt, self.cacheable(prompt))
        kept: list[int] = []
        chain_keys: set[int] = set()  # the blocks this one hangs from: never evicted to make its room
        for index, (key, parent, tokens) in enumerate(chain):
            start = index * self.block_tokens
            block = self._blocks.get(key)
            if block is not None:
                if block.parent != parent or block.tokens != tokens:
                    break  # a hash collision: the older block stays, and this chain ends here
                kept.append(key)
                chain_keys.add(key)
                continue
            if start < cached:
                break  # a block of the hit was evicted meanwhile: what follows would be unreachable
            if room < self.block_tokens or not self._make_room(room - self.block_tokens, chain_keys):
                break
            self._blocks[key] = _Block(parent, tokens, read(start))
            kept.append(key)
            chain_keys.add(key)
        self._touch(kept)

    def evict_to(self, room: int) -> None:
        """Drop least recently used blocks until the cache holds at most `room` tokens."""
        self._make_room(max(room, 0))

    def _make_room(self, room: int, keep: set[int] | None = None) -> bool:
        """Evict least recently used blocks down to `room` (>= 0) tokens, never those in `keep` (the
        chain a block is being added to); False when only those are left and still too many."""
        while self.tokens > room:
            victim = next((key for key in self._blocks if keep is None or key not in keep), None)
            if victim is None:
                return False
            del self._blocks[victim]
        return True

    def _touch(self, keys: list[int]) -> None:
        """Mark a chain used, its end first, so that a parent is always more recent than its children."""
        for key in reversed(keys):
            self._blocks.move_to_end(key)

    def clear(self) -> None:
        self._blocks.clear()
