"""`builtin:tiny`: a small Llama model with random weights and a byte-level tokenizer, built in code.

`builtin:small` is the same at about 110M parameters (hidden 768, 12 layers), for benchmarks.
`builtin:glm4v-tiny` is a ~3M-parameter GLM-4.1V (builtin_glm4v.py): images, for the phone agent.

It needs no file and no hub, so the whole serving path runs on any machine. Its text is meaningless.
The tokenizer maps every UTF-8 byte to one token, so any text round-trips and a multi-byte character
is always split across tokens (which exercises incremental detokenization).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoglm_server.engine.byte_level import byte_symbols as _byte_symbols

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMALL = "builtin:small"
BUILTIN_SEED = 1234

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
_SPECIALS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)

# Sized so that one decode step is dominated by the model, not by Python, yet tests stay fast.
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}
SMALL_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 2048,
}
# The built-in Llama models by name (each with the byte-level tokenizer and seeded random weights).
BUILTIN_LLAMAS: dict[str, dict[str, Any]] = {BUILTIN_TINY: TINY_CONFIG, BUILTIN_SMALL: SMALL_CONFIG}
BUILTIN_GLM4V_TINY = "builtin:glm4v-tiny"
# Every built-in model name (the vision one is built by builtin_glm4v.py).
BUILTIN_MODELS: frozenset[str] = frozenset({*BUILTIN_LLAMAS, BUILTIN_GLM4V_TINY})


def build(name: str) -> tuple[Any, Any, Any | None]:
    """(tokenizer, model, image processor or None) of a built-in model, all made in code."""
    if name == BUILTIN_GLM4V_TINY:
        from autoglm_server.engine import builtin_glm4v

        tokenizer = builtin_glm4v.build_tokenizer()
        return tokenizer, builtin_glm4v.build_model(tokenizer), builtin_glm4v.build_image_processor()
    tokenizer = build_tokenizer()
    return tokenizer, build_model(tokenizer, name), None


def seed(name: str) -> int:
    """The seed a built-in model's weights are drawn from (reported as its revision)."""
    if name == BUILTIN_GLM4V_TINY:
        from autoglm_server.engine import builtin_glm4v

        return builtin_glm4v.GLM4V_SEED
    return BUILTIN_SEED


def save(name: str, directory: Path) -> Path:
    """Write a built-in model as a Hugging Face model directory (for vLLM, check-parity, tests)."""
    if name == BUILTIN_GLM4V_TINY:
        from autoglm_server.engine import builtin_glm4v

        return builtin_glm4v.save(directory)
    tokenizer, model, _ = build(name)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tokenizer() -> Any:
    """A byte-level tokenizer: ids 0-255 are the bytes, then BOS, EOS and PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    for special in _SPECIALS:
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    bos_id = vocab[BOS_TOKEN]
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: Any, name: str = BUILTIN_TINY) -> Any:
    """The Llama model with weights drawn from a fixed seed (same weights on every machine)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **BUILTIN_LLAMAS[name],
    )
    # A private generator: loading must not disturb (or depend on) the process's global RNG.
    generator = torch.Generator().manual_seed(BUILTIN_SEED)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.fill_(1.0)  # norm weights
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * (config.initializer_range * 4))
    return model.eval()  # type: ignore[no-untyped-call]
