"""A KV cache whose rows can join and leave between steps, written in place.

transformers' DynamicLayer appends each step's K/V with `torch.cat`, copying the whole cache every
step (about a quarter of a decode step for a small model at batch 32 on CPU). `SlotLayer` keeps K/V
in a buffer with spare columns and writes new tokens in place; the model sees a view of the live
window `[start, end)`. Rows are left-aligned to the newest column, so merging batches pads the
shorter one on the left and trimming columns that became padding everywhere only moves `start`.
Copies happen only when rows join or leave, or the buffer is full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from autoglm_server.engine.builtin.prefix_cache import BlockKV

# Spare columns given to a buffer when it is (re)allocated: at least this, or half the live width.
_MIN_SPARE = 64


def _spare(width: int) -> int:
    return max(_MIN_SPARE, width // 2)


class SlotLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer's K/V: buffers [rows, heads, capacity, dim] and the live window [start, end)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None
        self.start = 0
        self.end = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.kbuf is None or self.end + new > self.kbuf.shape[2]:
            self._reallocate(key_states, value_states, new)
        assert self.kbuf is not None
        assert self.vbuf is not None
        self.kbuf[:, :, self.end : self.end + new].copy_(key_states)
        self.vbuf[:, :, self.end : self.end + new].copy_(value_states)
        self.end += new
        self._publish()
        assert self.keys is not None
        assert self.values is not None
        return self.keys, self.values

    def _publish(self) -> None:
        assert self.kbuf is not None
        assert self.vbuf is not None
        self.keys = self.kbuf[:, :, self.start : self.end]
        self.values = self.vbuf[:, :, self.start : self.end]

    def _reallocate(self, key_states: torch.Tensor, value_states: torch.Tensor, new: int) -> None:
        """A bigger buffer holding the live window at its start."""
        live = self.end - self.start
        capacity = live + new + _spare(live + new)
        rows, heads = key_states.shape[:2]
        kbuf = key_states.new_empty((rows, heads, capacity, key_states.shape[-1]))
        vbuf = value_states.new_empty((rows, heads, capacity, value_states.shape[-1]))
        if self.kbuf is not None and self.vbuf is not None and live:
            kbuf[:, :, :live].copy_(self.kbuf[:, :, self.start : self.end])
            vbuf[:, :, :live].copy_(self.vbuf[:, :, self.start : self.end])
        self.kbuf, self.vbuf, self.start, self.end = kbuf, vbuf, 0, live

    def get_seq_length(self) -> int:
        return self.end - self.start

    def keep_rows(self, index: torch.Tensor, trim: int) -> None:
        """Keep rows `index` and drop `trim` leading columns (padding in every kept row)."""
        assert self.kbuf is not None
        assert self.vbuf is not None
        # The layer changes only once both buffers exist: an allocation that fails leaves it whole.
        start = self.start + trim
        width = self.end - start
        kbuf = self.kbuf.new_empty((len(index), self.kbuf.shape[1], width + _spare(width), self.kbuf.shape[3]))
        vbuf = self.vbuf.new_empty((len(index), self.vbuf.shape[1], width + _spare(width), self.vbuf.shape[3]))
        torch.index_select(self.kbuf[:, :, start : self.end], 0, index, out=kbuf[:, :, :width])
        torch.index_select(self.vbuf[:, :, start : self.end], 0, index, out=vbuf[:, :, :width])
        self.kbuf, self.vbuf, self.start, self.end = kbuf, vbuf, 0, width
        self._publish()

    def append_rows(self, other: SlotLayer) -> None:
        """Put `other`'s rows after these, both right-aligned on the newest column."""
        assert self.kbuf is not None
        assert self.vbuf is not None
        assert other.kbuf is not None
        assert other.vbuf is not None
        mine, theirs = self.end - self.start, other.end - other.start
        width = max(mine, theirs)
        rows = self.kbuf.shape[0] + other.kbuf.shape[0]
        shape_k = (rows, self.kbuf.shape[1], width + _spare(width), self.kbuf.shape[3])
        shape_v = (rows, self.vbuf.shape[1], width + _spare(width), self.vbuf.shape[3])
        kbuf, vbuf = self.kbuf.new_zeros(shape_k), self.vbuf.new_zeros(shape_v)
        split = self.kbuf.shape[0]
        kbuf[:split, :, width - mine : width] = self.kbuf[:, :, self.start : self.end]
        vbuf[:split, :, width - mine : width] = self.vbuf[:, :, self.start : self.end]
        kbuf[split:, :, width - theirs : width] = other.kbuf[:, :, other.start : other.end]
        vbuf[split:, :, width - theirs : width] = other.vbuf[:, :, other.start : other.end]
        self.kbuf, self.vbuf, self.start, self.end = kbuf, vbuf, 0, width
        self._publish()

    def forget_appended(self, rows: int, width: int) -> None:
        """Undo `append_rows` without allocating: back to the first `rows` rows, `width` columns wide.

        append_rows put those rows right-aligned in the new buffer, so their old window is its last
        `width` columns; narrowing the views is enough (the joined rows' memory goes with the next
        reallocation).
        """
        assert self.kbuf is not None
        assert self.vbuf is not None
        self.kbuf, self.vbuf = self.kbuf[:rows], self.vbuf[:rows]
        self.start = self.end - width
        self._publish()


class SlotCache(DynamicCache):
    """A DynamicCache made of SlotLayers (one added per model layer on first use)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=SlotLayer)

    @property
    def slot_layers(self) -> list[SlotLayer]:
        return [layer for layer in self.layers if isinstance(layer, SlotLayer)]


def preloaded(prefixes: Sequence[Sequence[BlockKV]], block_tokens: int, extra: int) -> tuple[SlotCache, torch.Tensor]:
    """A SlotCache holding each row's cached prefix right-aligned on one width, and its mask.

    `prefixes[i]` are row i's blocks in order (each (keys, values) per layer, [heads, block, dim]);
    rows with shorter prefixes are padded on the left. `extra` columns are left free for the forward
    that follows (the prompts' uncached rest), so it writes in place.
    """
    lengths = [len(blocks) * block_tokens for blocks in prefixes]
    width = max(lengths)
    first = next(blocks[0] for blocks in prefixes if blocks)
    cache = SlotCache()
    capacity = width + extra + _spare(width + extra)
    for layer_index, (k0, v0) in enumerate(first):
        layer = SlotLayer()
        layer.lazy_initialization(k0, v0)
        kbuf = k0.new_zeros((len(prefixes), k0.shape[0], capacity, k0.shape[-1]))
        vbuf = v0.new_zeros((len(prefixes), v0.shape[0], capacity, v0.shape[-1]))
        for row, blocks in enumerate(prefixes):
            column = width - lengths[row]
            for block in blocks:
                keys, values = block[layer_index]
                kbuf[row, :, column : column + block_tokens] = keys
                vbuf[row, :, column : column + block_tokens] = values
                column += block_tokens
        layer.kbuf, layer.vbuf, layer.start, layer.end = kbuf, vbuf, 0, width
        layer._publish()
        cache.layers.append(layer)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=first[0][0].device)
    for row, length in enumerate(lengths):
        mask[row, width - length :] = 1
    return cache, mask


def read_block(cache: SlotCache, row: int, column: int, block_tokens: int) -> BlockKV:
    """Copies of one row's K/V over `block_tokens` columns from `column` of the live window, per layer."""
    return tuple(
        (
            layer.keys[row, :, column : column + block_tokens].clone(),
            layer.values[row, :, column : column + block_tokens].clone(),
        )
        for layer in cache.slot_layers
        if layer.keys is not None and layer.values is not None
    )
