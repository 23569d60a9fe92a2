"""The baselines, measured in this process with transformers' generate().

ceiling: one static batch of uniform requests (equal prompts, exactly G new tokens each).
serial: the same requests one at a time (a web handler that calls generate).
padded: mixed-length requests as one left-padded batch; it runs until the longest is done, and only
each request's own tokens count as useful output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from autoglm_client.loadgen import LoadRequest


def _generate(model: Any, prompts: list[tuple[int, ...]], new_tokens: int) -> None:
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        model.generate(
            ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()


def warm_up(model: Any) -> None:
    _generate(model, [(1, 2, 3, 4)] * 2, 4)


def ceiling(model: Any, requests: Sequence[LoadRequest]) -> float:
    """Generated tokens/s of one static batch of all the (uniform) requests."""
    start = time.perf_counter()
    _generate(model, [r.prompt_token_ids for r in requests], requests[0].max_new_tokens)
    return sum(r.max_new_tokens for r in requests) / (time.perf_counter() - start)


def serial(model: Any, requests: Sequence[LoadRequest]) -> float:
    """Generated tokens/s of the requests one after another."""
    start = time.perf_counter()
    for request in requests:
        _generate(model, [request.prompt_token_ids], request.max_new_tokens)
    return sum(r.max_new_tokens for r in requests) / (time.perf_counter() - start)


def padded(model: Any, requests: Sequence[LoadRequest]) -> float:
    """Useful tokens/s of mixed requests as one padded batch run to the longest output."""
    start = time.perf_counter()
    _generate(model, [r.prompt_token_ids for r in requests], max(r.max_new_tokens for r in requests))
    return sum(r.max_new_tokens for r in requests) / (time.perf_counter() - start)
