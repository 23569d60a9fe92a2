"""Continuous batching against transformers' own generate(), on tiny models of several families."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import torch

from autoglm_server.engine.types import FinishReason, SamplingOptions
from tests.engine.conftest import collect, request, tiny

FAMILIES = ["llama", "qwen2", "gpt2"]


def reference(family: str, prompt: list[int], n: int) -> list[int]:
    model = tiny(family).model
    # No EOS at all: the engine runs with ignore_eos (EOS is generated, not stopped at), and
    # min_new_tokens would instead forbid EOS and change the output.
    config = copy.deepcopy(model.generation_config)
    config.update(eos_token_id=[], max_new_tokens=n, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
            generation_config=config,
        )
    tokens: list[int] = out[0, len(prompt) :].tolist()
    return tokens


def prompt_of(i: int) -> list[int]:
    return [(7 * i + 13 * j) % 250 for j in range(3 + 5 * i)]


@pytest.mark.parametrize("family", FAMILIES)
async def test_batched_greedy_equals_generate_one_at_a_time_with_mid_flight_joins(
    family: str, make_engine: Any
) -> None:
    engine = await make_engine(family)
    lengths = [12, 5, 9, 14, 3]

    async def run(i: int) -> list[int]:
        # Staggered arrivals: later requests join a batch that is already decoding.
        await asyncio.sleep(0.004 * i)
        stream = await engine.submit(request(f"r{i}", prompt_of(i), lengths[i], ignore_eos=True))
        tokens, _, last = await collect(stream)
        assert last.finish_reason is FinishReason.LENGTH
        return tokens

    outputs = await asyncio.gather(*(run(i) for i in range(len(lengths))))
    for i, tokens in enumerate(outputs):
        assert tokens == reference(family, prompt_of(i), lengths[i]), f"request {i}"
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.reserved_tokens) == (0, 0, 0)


async def test_text_deltas_concatenate_to_the_decoded_output(make_engine: Any) -> None:
    engine = await make_engine()
    tokenizer = tiny("llama").tokenizer
    stream = await engine.submit(request("r", prompt_of(2), 60, ignore_eos=True))
    tokens, text, _ = await collect(stream)
    assert text == tokenizer.decode(tokens, skip_special_tokens=True)


async def test_usage_counts_and_timings(make_engine: Any) -> None:
    engine = await make_engine()
    tokens, _, last = await collect(await engine.submit(request("r", [1, 2, 3, 4], 6, ignore_eos=True)))
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 6)
    assert last.usage.queue_time_s >= 0
    assert last.usage.time_to_first_token_s is not None
    assert len(tokens) == 6


async def test_seeded_sampling_is_reproducible(make_engine: Any) -> None:
    engine = await make_engine()
    sampling = SamplingOptions(temperature=1.5, top_p=0.95, top_k=50, seed=42)
    first, _, _ = await collect(await engine.submit(request("a", [5, 6, 7], 20, sampling=sampling, ignore_eos=True)))
    again, _, _ = await collect(await engine.submit(request("b", [5, 6, 7], 20, sampling=sampling, ignore_eos=True)))
    other = SamplingOptions(temperature=1.5, top_p=0.95, top_k=50, seed=43)
    third, _, _ = await collect(await engine.submit(request("c", [5, 6, 7], 20, sampling=other, ignore_eos=True)))
    assert first == again
    assert first != third


async def test_top_k_one_is_greedy_and_rows_sample_independently(make_engine: Any) -> None:
    engine = await make_engine()
    greedy = request("g", [9, 8, 7], 10, ignore_eos=True)
    topk1 = request("k", [9, 8, 7], 10, ignore_eos=True, sampling=SamplingOptions(temperature=2.0, top_k=1, seed=1))
    hot = request("h", [9, 8, 7], 10, ignore_eos=True, sampling=SamplingOptions(temperature=5.0, seed=3))
    streams = [await engine.submit(r) for r in (greedy, topk1, hot)]
    results = await asyncio.gather(*(collect(s) for s in streams))
    assert results[0][0] == results[1][0] == reference("llama", [9, 8, 7], 10)
    assert results[2][0] != results[0][0]


async def test_repetition_penalty_changes_greedy_output(make_engine: Any) -> None:
    engine = await make_engine()
    plain, _, _ = await collect(await engine.submit(request("a", [1, 1, 1], 30, ignore_eos=True)))
    penal = SamplingOptions(repetition_penalty=5.0)
    penalised, _, _ = await collect(await engine.submit(request("b", [1, 1, 1], 30, ignore_eos=True, sampling=penal)))
    assert len(set(penalised)) >= len(set(plain))
    assert penalised != plain


async def test_logprobs_with_top_alternatives(make_engine: Any) -> None:
    engine = await make_engine()
    stream = await engine.submit(request("r", [3, 4, 5], 5, ignore_eos=True, logprobs=True, top_logprobs=3))
    logprobs = []
    async for delta in stream:
        logprobs += delta.logprobs
    assert len(logprobs) == 5
    for entry in logprobs:
        assert entry.logprob <= 0
        assert len(entry.top) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top[0][0] == entry.token_id
        assert entry.top[0][1] == pytest.approx(entry.logprob)


async def test_long_outputs_grow_the_cache_and_still_match_generate(make_engine: Any) -> None:
    # Past the cache's spare columns the buffers are reallocated; rows also leave at different times.
    engine = await make_engine("llama")
    specs = [(prompt_of(1), 150), (prompt_of(4), 90), (prompt_of(0), 120)]
    streams = [await engine.submit(request(f"r{i}", prompt, n, ignore_eos=True)) for i, (prompt, n) in enumerate(specs)]
    outputs = await asyncio.gather(*(collect(s) for s in streams))
    for (prompt, n), (tokens, _, _) in zip(specs, outputs, strict=True):
        assert tokens == reference("llama", prompt, n)


async def test_mixed_prompt_lengths_prefilled_in_groups_match_generate(make_engine: Any) -> None:
    engine = await make_engine("qwen2", max_running=16)
    prompts = [prompt_of(i % 7)[: 2 + (i * 5) % 30] or [1] for i in range(12)]
    streams = [await engine.submit(request(f"m{i}", p, 6, ignore_eos=True)) for i, p in enumerate(prompts)]
    outputs = await asyncio.gather(*(collect(s) for s in streams))
    for prompt, (tokens, _, _) in zip(prompts, outputs, strict=True):
        assert tokens == reference("qwen2", prompt, 6)
