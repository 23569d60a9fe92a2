"""Compare an engine's greedy run with the reference: the first divergent position and why."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoglm_server.parity.reference import Run

# Chosen-token logprobs further apart than this count as a divergence (float32 runs agree to ~1e-5).
DEFAULT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Verdict:
    """Where two runs part (None: they agree), and by how much their logprobs differ at most."""

    prompt_tokens: tuple[int, int]
    compared: int
    first_divergence: int | None
    reason: str
    max_logprob_gap: float

    @property
    def ok(self) -> bool:
        return self.first_divergence is None


def compare(reference: Run, engine: Run, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    prompts = (len(reference.prompt_ids), len(engine.prompt_ids))
    steps = min(len(reference.tokens), len(engine.tokens))
    gaps = [abs(a - b) for a, b in zip(reference.logprobs[:steps], engine.logprobs[:steps], strict=True)]
    biggest = max(gaps, default=0.0)
    if reference.prompt_ids != engine.prompt_ids:
        pairs = zip(reference.prompt_ids, engine.prompt_ids, strict=False)
        at = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        where = f"prompt token {at}" if at is not None else "the prompt's length"
        reason = f"the prompts differ at {where} ({prompts[0]} vs {prompts[1]} tokens)"
        return Verdict(prompts, steps, 0, reason, biggest)
    for i in range(steps):
        if reference.tokens[i] != engine.tokens[i]:
            return Verdict(prompts, steps, i, f"token {reference.tokens[i]} vs {engine.tokens[i]}", biggest)
        if gaps[i] > tolerance:
            return Verdict(prompts, steps, i, f"logprob gap {gaps[i]:.3g} > {tolerance:g}", biggest)
    if len(reference.tokens) != len(engine.tokens):
        return Verdict(prompts, steps, steps, f"{len(reference.tokens)} vs {len(engine.tokens)} tokens", biggest)
    return Verdict(prompts, steps, None, "same tokens, logprobs within tolerance", biggest)


def top_logits(logits: torch.Tensor, position: int, k: int = 5) -> list[tuple[int, float]]:
    """The reference's k largest logits at `position` (token id, logit)."""
    values, ids = logits[position].topk(k)
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
