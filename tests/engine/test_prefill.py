"""Prefill grouping: every request once, padding bounded, longest first. No torch."""

from __future__ import annotations

import random

from autoglm_server.engine.builtin.prefill import prefill_groups


def padded_size(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


def test_each_request_is_in_exactly_one_group() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(1, 200) for _ in range(50)]
    groups = prefill_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(50))


def test_padding_stays_within_the_share_and_beats_one_batch() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(8, 128) for _ in range(32)]
    groups = prefill_groups(lengths, 0.1)
    for group in groups:
        real = sum(lengths[i] for i in group)
        assert len(group) * max(lengths[i] for i in group) <= real * 1.1
    assert padded_size(lengths, groups) < 32 * max(lengths) * 0.7


def test_equal_lengths_make_one_group() -> None:
    assert prefill_groups([64] * 32) == [list(range(32))]
    assert prefill_groups([]) == []
