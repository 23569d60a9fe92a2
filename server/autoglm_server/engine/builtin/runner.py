"""The model runner: forward passes over a batch whose rows join and leave between steps.

The batch keeps the Hugging Face model's own DynamicCache, left-padded: every row's newest token is in
the last column, padding columns are masked out by the attention mask, and each row carries its own
position id. New requests are prefilled as a small batch of their own and merged in (pad the shorter
cache on the left, concatenate rows); finished rows are dropped by selecting indices, and columns that
became padding in every row are trimmed.

What a model family needs in prefill (images, 3-D rotary positions) is its InputStrategy's business
(inputs.py); the batch keeps one scalar next position per row for every family.

Merging and selecting copy the KV cache layer by layer, so they can run out of device memory too.
A merge that fails part-way is undone (without allocating) and leaves the running batch as it was;
a select that fails leaves the batch unusable, and the caller drops it (core.py fails its rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autoglm_server.engine.builtin.inputs import InputStrategy, TextInputs
from autoglm_server.engine.builtin.kvcache import SlotCache, SlotLayer, preloaded
from autoglm_server.engine.builtin.prefix_cache import Hit
from autoglm_server.engine.types import ImageInput

# Called before every forward with "prefill" or "decode", and before each layer's copy in a merge or
# select with "merge" or "select"; tests raise torch.OutOfMemoryError from it.
FaultInjector = Callable[[str], None]


@dataclass
class KVBatch:
    """The device state of the running rows, in row order."""

    cache: SlotCache
    mask: torch.Tensor  # [rows, columns] int64, 0 on left padding
    positions: torch.Tensor  # [rows] int64, the position id of each row's next token
    last_tokens: torch.Tensor  # [rows] int64, each row's newest token (the next step's input)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


class ModelRunner:
    """Runs prefill and decode steps of a causal LM on a KVBatch."""

    def __init__(
        self, model: Any, fault_injector: FaultInjector | None = None, inputs: InputStrategy | None = None
    ) -> None:
        self.model = model
        self.device: torch.device = next(model.parameters()).device
        self.fault_injector = fault_injector
        self.inputs: InputStrategy = inputs or TextInputs()

    def _forward(self, phase: str, **inputs: Any) -> torch.Tensor:
        if self.fault_injector is not None:
            self.fault_injector(phase)
        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def prefill(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[Sequence[ImageInput]] = (),
        prefixes: Sequence[Hit] = (),
    ) -> tuple[torch.Tensor, KVBatch]:
        """Run the prompts (and row i's images[i]) as one left-padded batch; returns last-position
        logits and their KVBatch.

        With `prefixes` (row i's cached prefix from the prefix cache, possibly empty), each row's
        cached K/V is put in the cache first, right-aligned on the longest one, and only the rest of
        each prompt goes through the forward, right-aligned after it: a row whose prefix and rest are
        both shorter than the longest has a masked gap between them, which attention skips like padding.
        """
        rows = len(prompts)
        cached = [hit.tokens for hit in prefixes] if any(hit.tokens for hit in prefixes) else [0] * rows
        built = self.inputs.build(prompts, images or [()] * rows, self.device, cached)
        if any(cached):
            block = next(hit.tokens // len(hit.blocks) for hit in prefixes if hit.blocks)
            cache, prefix_mask = preloaded([hit.blocks for hit in prefixes], block, built.ids.shape[1])
            mask = torch.cat([prefix_mask.to(built.mask.device), built.mask], dim=1)
            built.forward["attention_mask"] = mask
        else:
            cache, mask = SlotCache(), built.mask
        logits = self._forward("prefill", **built.forward, past_key_values=cache)
        return logits, KVBatch(cache, mask, built.next_positions, built.ids[:, -1].clone())

    def decode(self, batch: KVBatch) -> torch.Tensor:
        """Feed each row's newest token; returns the next-token logits [rows, vocab]."""
        mask = torch.cat([batch.mask, batch.mask.new_ones((batch.rows, 1))], dim=1)
        logits = self._forward(
            "decode",
            input_ids=batch.last_tokens.unsqueeze(1),
            attention_mask=mask,
            position_ids=batch.positions.unsqueeze(1),
            past_key_values=batch.cache,
        )
        batch.mask = mask
        batch.positions = batch.positions + 1
        return logits

    def set_last_tokens(self, batch: KVBatch, token_ids: list[int]) -> None:
        batch.last_tokens = torch.tensor(token_ids, dtype=torch.long, device=self.device)

    def _fault(self, phase: str) -> None:
        if self.fault_injector is not None:
            self.fault_injector(phase)

    def merge(self, running: KVBatch | None, joining: KVBatch) -> KVBatch:
        """Append the joining rows after the running ones (both left-padded to one width).

        On torch.OutOfMemoryError the running batch is left exactly as it was (the joining rows are
        not in it), so only the joining requests need to fail.
        """
        if running is None or running.rows == 0:
            return joining
        width = max(running.mask.shape[1], joining.mask.shape[1])
        rows = running.rows
        merged: list[tuple[SlotLayer, int]] = []  # each merged layer and its width before
        try:
            for old, new in zip(running.cache.slot_layers, joining.cache.slot_layers, strict=True):
                self._fault("merge")
                before = old.get_seq_length()
                old.append_rows(new)
                merged.append((old, before))
            mask = running.mask.new_zeros((rows + joining.rows, width))
            mask[:rows, width - running.mask.shape[1] :] = running.mask
            mask[rows:, width - joining.mask.shape[1] :] = joining.mask
            positions = torch.cat([running.positions, joining.positions])
            last_tokens = torch.cat([running.last_tokens, joining.last_tokens])
        except torch.OutOfMemoryError:
            for layer, before in merged:
                layer.forget_appended(rows, before)
            raise
        running.mask, running.positions, running.last_tokens = mask, positions, last_tokens
        return running

    def select(self, batch: KVBatch, keep: list[int]) -> KVBatch | None:
        """Keep only the rows at `keep` (in that order); trim columns that are padding in every row.

        On torch.OutOfMemoryError some layers may already hold only the kept rows: the batch must
        be dropped.
        """
        if not keep:
            return None
        if len(keep) == batch.rows:
            return batch
        index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        mask = batch.mask.index_select(0, index)
        first = int(mask.any(dim=0).nonzero()[0, 0])
        for layer in batch.cache.slot_layers:
            self._fault("select")
            layer.keep_rows(index, first)
        batch.mask = mask[:, first:]
        batch.positions = batch.positions.index_select(0, index)
        batch.last_tokens = batch.last_tokens.index_select(0, index)
        return batch
