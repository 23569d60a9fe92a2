"""Tiny models built from configs (no files, no hub) and engines around them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import torch

from autoglm_server.engine import builtin_models
from autoglm_server.engine.builtin.async_engine import AsyncEngine
from autoglm_server.engine.builtin.loader import LoadedModel, dtype_name
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import GenerationDelta, GenerationRequest, ModelDescription

torch.set_num_threads(1)

_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 256}


def build_tiny(family: str, seed: int = 0) -> LoadedModel:
    """A randomly initialised model of `family` with the builtin byte-level tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = builtin_models.build_tokenizer()
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model: Any
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "llama":
            model = LlamaForCausalLM(LlamaConfig(**_SMALL, intermediate_size=128, num_key_value_heads=2, **ids))
        elif family == "qwen2":
            model = Qwen2ForCausalLM(Qwen2Config(**_SMALL, intermediate_size=128, num_key_value_heads=2, **ids))
        elif family == "gpt2":
            config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **ids)
            model = GPT2LMHeadModel(config)
        else:
            raise ValueError(family)
        # Larger weights than the default init, so that logits are far apart and greedy has no near-ties.
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() > 1:
                    param.normal_(0.0, 0.1)
    model.eval()
    description = ModelDescription(
        model_id=f"test:{family}",
        revision="test",
        architecture=type(model).__name__,
        max_context_length=256,
        vocab_size=len(tokenizer),
        eos_token_ids=(tokenizer.eos_token_id,),
        dtype=dtype_name(model.dtype),
        device="cpu",
        random_weights=True,
    )
    return LoadedModel(model, tokenizer, description)


_CACHE: dict[str, LoadedModel] = {}


def tiny(family: str) -> LoadedModel:
    if family not in _CACHE:
        _CACHE[family] = build_tiny(family)
    return _CACHE[family]


EngineFactory = Callable[..., AsyncIterator[AsyncEngine]]


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Any]]:
    """make_engine(family="llama", **settings) -> a started AsyncEngine, shut down after the test."""
    engines: list[AsyncEngine] = []

    async def make(family: str = "llama", fault_injector: Any = None, **settings: Any) -> AsyncEngine:
        engine = AsyncEngine(EngineSettings(**settings), loaded=tiny(family), fault_injector=fault_injector)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.shutdown()


def request(rid: str, prompt: list[int] | tuple[int, ...], max_new_tokens: int = 8, **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt_token_ids=tuple(prompt), max_new_tokens=max_new_tokens, **kw)


async def collect(stream: AsyncIterator[GenerationDelta]) -> tuple[list[int], str, GenerationDelta]:
    """All token ids, the text, and the final delta of one stream."""
    tokens: list[int] = []
    text = ""
    last = GenerationDelta()
    async for delta in stream:
        tokens += delta.token_ids
        text += delta.text
        last = delta
    return tokens, text, last
