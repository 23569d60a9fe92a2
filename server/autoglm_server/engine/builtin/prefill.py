"""How the requests admitted in one step are grouped for prefill. Pure Python: no torch.

A prefill batch is left-padded to its longest prompt, and padding costs as much compute as real
tokens. Admitting 32 prompts of 8 to 128 tokens as one batch spends about half the prefill on
padding, so prompts are sorted by length and cut into groups whose padding stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

# A group may hold at most this share of padding (padded size <= real tokens x (1 + share)).
MAX_PADDING_SHARE = 0.1


def prefill_groups(lengths: Sequence[int], max_padding_share: float = MAX_PADDING_SHARE) -> list[list[int]]:
    """Indices into `lengths`, grouped: longest prompts first, each group's padding bounded."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    real = 0
    for index in order:
        if groups:
            group = groups[-1]
            width = lengths[group[0]]  # the longest in the group, as it was added first
            if (len(group) + 1) * width <= (real + lengths[index]) * (1 + max_padding_share):
                group.append(index)
                real += lengths[index]
                continue
        groups.append([index])
        real = lengths[index]
    return groups
