"""Per-request sampling inside one batch.

Each row has its own temperature, top-k, top-p, penalties and random generator, applied in the order
transformers' `generate` applies them (penalties, temperature, top-k, top-p). The repetition penalty
(over prompt and output) comes first, then the OpenAI presence and frequency penalties (over the
output only), as vLLM orders them. Greedy rows (temperature 0) take the argmax after the penalties,
as vLLM does: Open-AutoGLM decodes at temperature 0 with frequency_penalty 0.2. Log-probabilities are
those of the model's raw distribution, before any sampling transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from autoglm_server.engine.types import SamplingOptions, TokenLogprob


@dataclass(slots=True)
class RowSampling:
    """The sampling state of one running request."""

    options: SamplingOptions
    generator: torch.Generator | None
    logprobs: bool = False
    top_logprobs: int = 0
    # Tokens seen so far (prompt and output), for the repetition penalty; kept only when it applies.
    seen: list[int] = field(default_factory=list)
    # The distinct tokens generated so far and how often each came, for the presence and frequency
    # penalties (parallel lists, first appearance first; `slots` maps a token to its index). Kept
    # only when one of them is non-zero.
    output_ids: list[int] = field(default_factory=list)
    output_counts: list[int] = field(default_factory=list)
    slots: dict[int, int] = field(default_factory=dict)
    # Greedy with no penalty and no logprobs: the row's token is the argmax of its raw logits.
    plain: bool = False

    @classmethod
    def create(
        cls, options: SamplingOptions, prompt: tuple[int, ...], device: torch.device, logprobs: bool, top: int
    ) -> RowSampling:
        generator = None
        if not options.greedy:
            generator = torch.Generator(device=device)
            if options.seed is not None:
                generator.manual_seed(options.seed)
            else:
                generator.seed()
        seen = list(prompt) if options.repetition_penalty != 1.0 else []
        row = cls(options, generator, logprobs, top, seen)
        row.plain = options.greedy and not logprobs and options.repetition_penalty == 1.0 and not row.counts_output
        return row

    @property
    def counts_output(self) -> bool:
        """Whether the presence or frequency penalty applies to this row."""
        return self.options.presence_penalty != 0.0 or self.options.frequency_penalty != 0.0

    def observe(self, token_id: int) -> None:
        if self.options.repetition_penalty != 1.0:
            self.seen.append(token_id)
        if self.counts_output:
            slot = self.slots.get(token_id)
            if slot is None:
                self.slots[token_id] = len(self.output_ids)
                self.output_ids.append(token_id)
                self.output_counts.append(1)
            else:
                self.output_counts[slot] += 1


def _apply_repetition_penalty(logits: torch.Tensor, rows: list[RowSampling]) -> None:
    for i, row in enumerate(rows):
        penalty = row.options.repetition_penalty
        if penalty == 1.0 or not row.seen:
            continue
        index = torch.tensor(row.seen, device=logits.device)
        picked = logits[i].gather(0, index)
        logits[i].scatter_(0, index, torch.where(picked < 0, picked * penalty, picked / penalty))


def _apply_output_penalties(logits: torch.Tensor, rows: list[RowSampling]) -> None:
    """logit[t] -= presence * (count[t] > 0) + frequency * count[t], over each row's output so far.

    One scatter for the whole batch: only the (row, token) pairs that were generated are touched,
    so the cost follows the output length, not the vocabulary.
    """
    penalised = [(i, row) for i, row in enumerate(rows) if row.counts_output and row.output_ids]
    if not penalised:
        return
    device = logits.device
    row_index = torch.tensor([i for i, row in penalised for _ in row.output_ids], dtype=torch.long, device=device)
    token_index = torch.tensor([t for _, row in penalised for t in row.output_ids], dtype=torch.long, device=device)
    counts = torch.tensor([c for _, row in penalised for c in row.output_counts], dtype=logits.dtype, device=device)
    lengths = torch.tensor([len(row.output_ids) for _, row in penalised], device=device)
    presence = torch.tensor([row.options.presence_penalty for _, row in penalised], dtype=logits.dtype, device=device)
    frequency = torch.tensor([row.options.frequency_penalty for _, row in penalised], dtype=logits.dtype, device=device)
    # Every listed token has count >= 1, so the presence term is the row's presence penalty itself.
    cut = presence.repeat_interleave(lengths) + frequency.repeat_interleave(lengths) * counts
    logits.index_put_((row_index, token_index), -cut, accumulate=True)


def apply_penalties(logits: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """The logits after each row's repetition, presence and frequency penalties.

    `logits` itself when no row has a penalty (no copy: the common case costs nothing), else a
    penalised copy.
    """
    if not any(r.options.repetition_penalty != 1.0 or r.counts_output for r in rows):
        return logits
    work = logits.clone()
    _apply_repetition_penalty(work, rows)
    _apply_output_penalties(work, rows)
    return work


def _filter_top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Mask (with -inf) the tokens outside each row's top-k and nucleus."""
    vocab = logits.shape[-1]
    if any(0 < k < vocab for k in top_k):
        ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_k], device=logits.device)
        kth = logits.topk(int(ks.max()), dim=-1).values.gather(1, (ks - 1).unsqueeze(1))
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any(p < 1.0 for p in top_p):
        ps = torch.tensor(top_p, device=logits.device, dtype=logits.dtype).unsqueeze(1)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= ps
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, rows: list[RowSampling]) -> tuple[list[int], list[TokenLogprob | None]]:
    """Pick one token per row from `logits` [rows, vocab]; also the logprobs rows asked for."""
    if all(row.plain for row in rows):
        # The common case (greedy, nothing else asked) in one operator and one read of the result.
        plain: list[int] = logits.argmax(dim=-1).tolist()
        return plain, [None] * len(rows)
    raw = logits.float()
    work = apply_penalties(raw, rows)
    chosen = work.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if not row.options.greedy]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        temps = torch.tensor([rows[i].options.temperature for i in sampled], device=logits.device)
        sub = work.index_select(0, index) / temps.unsqueeze(1)
        sub = _filter_top_k_top_p(
            sub, [rows[i].options.top_k for i in sampled], [rows[i].options.top_p for i in sampled]
        )
        probs = sub.softmax(dim=-1)
        # A request's own extreme numbers (a tiny temperature, a huge penalty) can overflow its row
        # into inf or NaN; multinomial would raise and take the whole batch down. Such a row takes
        # its greedy pick instead: the request is served, the others are untouched.
        usable = (torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)).tolist()
        picks = [
            torch.multinomial(probs[j], 1, generator=rows[i].generator) if usable[j] else chosen[i : i + 1]
            for j, i in enumerate(sampled)
        ]
        chosen = chosen.index_copy(0, index, torch.cat(picks))
    token_ids: list[int] = chosen.tolist()
    return token_ids, _logprobs(raw, token_ids, rows)


def _logprobs(raw: torch.Tensor, token_ids: list[int], rows: list[RowSampling]) -> list[TokenLogprob | None]:
    out: list[TokenLogprob | None] = [None] * len(rows)
    wanted = [i for i, row in enumerate(rows) if row.logprobs]
    if not wanted:
        return out
    logp = raw.index_select(0, torch.tensor(wanted, device=raw.device)).log_softmax(dim=-1).cpu()
    for j, i in enumerate(wanted):
        top: tuple[tuple[int, float], ...] = ()
        if rows[i].top_logprobs:
            values, ids = logp[j].topk(min(rows[i].top_logprobs, logp.shape[-1]))
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        out[i] = TokenLogprob(token_ids[i], float(logp[j, token_ids[i]]), top)
    return out
