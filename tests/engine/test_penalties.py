"""Presence and frequency penalties (OpenAI semantics), against a plain-Python reference.

Over the tokens a request generated so far: logit[t] -= presence * (count[t] > 0) + frequency * count[t].
The repetition penalty (over prompt and output) is applied first, as vLLM orders them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from autoglm_server.engine.builtin import loader
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.sampling import RowSampling, apply_penalties, sample
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import FinishReason, SamplingOptions
from tests.engine.conftest import collect, request

VOCAB = 7


def reference_logits(
    logits: list[float], prompt: list[int], output: list[int], options: SamplingOptions
) -> list[float]:
    """One row's penalised logits, computed token by token in plain Python."""
    out = list(logits)
    if options.repetition_penalty != 1.0:
        for token in set(prompt + output):
            x = out[token]
            out[token] = x * options.repetition_penalty if x < 0 else x / options.repetition_penalty
    for token in range(len(out)):
        count = output.count(token)
        out[token] -= options.presence_penalty * (1 if count > 0 else 0) + options.frequency_penalty * count
    return out


def row_after(options: SamplingOptions, prompt: list[int], output: list[int]) -> RowSampling:
    row = RowSampling.create(options, tuple(prompt), torch.device("cpu"), logprobs=False, top=0)
    for token in output:
        row.observe(token)
    return row


CASES: list[tuple[SamplingOptions, list[int], list[int]]] = [
    (SamplingOptions(frequency_penalty=0.2), [1, 2], [3, 3, 0, 3, 5]),
    (SamplingOptions(presence_penalty=1.5), [4], [6, 6, 2]),
    (SamplingOptions(presence_penalty=0.5, frequency_penalty=-0.75), [0], [1, 1, 1, 4]),
    (SamplingOptions(), [1], [1, 2, 2]),  # no penalty: this row must come out untouched
    (SamplingOptions(presence_penalty=-2.0, frequency_penalty=2.0), [], []),  # nothing generated yet
    (SamplingOptions(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3), [2, 5], [5, 0, 0]),
]


def test_penalised_logits_match_the_reference_row_by_row() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn((len(CASES), VOCAB), generator=generator) * 3
    rows = [row_after(options, prompt, output) for options, prompt, output in CASES]
    got = apply_penalties(logits, rows)
    for i, (options, prompt, output) in enumerate(CASES):
        expected = reference_logits(logits[i].tolist(), prompt, output, options)
        assert got[i].tolist() == pytest.approx(expected, abs=1e-5), f"row {i}: {options}"
    assert not torch.equal(got, logits), "the penalties changed nothing"


def test_greedy_rows_take_the_argmax_after_the_penalties_and_logprobs_stay_raw() -> None:
    # Token 3 leads by 0.5 but came twice: frequency 0.2 cuts it by 0.4 only, presence 0.2 more.
    logits = torch.tensor([[0.0, 1.0, 0.0, 1.5, 0.0, 0.0, 0.0]] * 3)
    rows = [
        row_after(SamplingOptions(frequency_penalty=0.2), [], [3, 3]),
        row_after(SamplingOptions(frequency_penalty=0.2, presence_penalty=0.2), [], [3, 3]),
        row_after(SamplingOptions(), [], [3, 3]),
    ]
    for row in rows:
        row.logprobs = True
    tokens, logprobs = sample(logits, rows)
    assert tokens == [3, 1, 3]
    raw = logits[0].log_softmax(dim=-1)
    assert [lp.logprob for lp in logprobs if lp is not None] == pytest.approx([float(raw[t]) for t in tokens])


def test_no_penalty_means_no_copy() -> None:
    logits = torch.randn((2, VOCAB))
    rows = [row_after(SamplingOptions(), [1], [2, 2]), row_after(SamplingOptions(temperature=0.7), [], [3])]
    assert apply_penalties(logits, rows) is logits
    assert rows[0].output_ids == [], "counts kept although no penalty applies"
    assert rows[1].output_ids == [], "counts kept although no penalty applies"


def test_counts_follow_the_output() -> None:
    row = row_after(SamplingOptions(frequency_penalty=1.0), [9, 9], [4, 2, 4, 4])
    assert dict(zip(row.output_ids, row.output_counts, strict=True)) == {4: 3, 2: 1}


# ---------------------------------------------------------------- builtin:tiny, through the engine

PROMPT = [1, 1, 1]  # greedy output of builtin:tiny repeats tokens (7 comes three times in 30)
NEW_TOKENS = 30


class _Penalties:
    """A transformers logits processor doing the reference computation, for generate()."""

    def __init__(self, prompt_length: int, options: SamplingOptions) -> None:
        self.prompt_length = prompt_length
        self.options = options

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        output = input_ids[0, self.prompt_length :].tolist()
        prompt = input_ids[0, : self.prompt_length].tolist()
        penalised = reference_logits(scores[0].tolist(), prompt, output, self.options)
        return torch.tensor([penalised], dtype=scores.dtype)


def generate_reference(model: Any, options: SamplingOptions) -> list[int]:
    from transformers import LogitsProcessorList

    config = copy.deepcopy(model.generation_config)
    config.update(eos_token_id=[], max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([PROMPT]),
            attention_mask=torch.ones((1, len(PROMPT)), dtype=torch.long),
            generation_config=config,
            logits_processor=LogitsProcessorList([_Penalties(len(PROMPT), options)]),
        )
    tokens: list[int] = out[0, len(PROMPT) :].tolist()
    return tokens


@pytest.fixture
async def tiny_engine() -> Any:
    """builtin:tiny as the daemon loads it; yields (engine, model) so the reference runs the same weights."""
    settings = EngineSettings(model="builtin:tiny", dtype="float32", device="cpu")
    loaded = loader.load(settings)
    engine = AsyncEngine(settings, loaded=loaded)
    await engine.start()
    yield engine, loaded.model
    await engine.shutdown()


async def _greedy(engine: AsyncEngine, rid: str, options: SamplingOptions) -> list[int]:
    tokens, _, last = await collect(
        await engine.submit(request(rid, PROMPT, NEW_TOKENS, ignore_eos=True, sampling=options))
    )
    assert last.finish_reason is FinishReason.LENGTH
    return tokens


async def test_penalties_change_greedy_output_on_builtin_tiny_as_the_reference_does(tiny_engine: Any) -> None:
    engine, model = tiny_engine
    plain = await _greedy(engine, "plain", SamplingOptions())
    assert plain == generate_reference(model, SamplingOptions())
    assert len(set(plain)) < len(plain), "the prompt no longer makes builtin:tiny repeat a token"
    for name, options in [
        ("open-autoglm", SamplingOptions(temperature=0.0, top_p=0.85, frequency_penalty=0.2)),
        ("presence", SamplingOptions(presence_penalty=2.0)),
        ("frequency", SamplingOptions(frequency_penalty=2.0)),
    ]:
        penalised = await _greedy(engine, name, options)
        assert penalised == generate_reference(model, options), name
        # Even Open-AutoGLM's mild 0.2 turns away the plain output's second 7 (its 15th token).
        assert penalised != plain, name
        if options.frequency_penalty >= 1.0 or options.presence_penalty >= 1.0:
            assert len(set(penalised)) > len(set(plain)), name
