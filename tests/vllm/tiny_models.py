"""Tiny random-weight models for the vLLM tests, built from configs and saved to a directory.

Nothing is downloaded. Both models are meaningless (random weights); what they prove is the serving
path: vLLM loads them, schedules them and streams from them like the real thing.

- a Llama with the built-in engine's byte-level tokenizer plus a chat template (head size 64, which
  vLLM's CPU attention supports);
- a Glm4vForConditionalGeneration shaped like AutoGLM-Phone-9B where it matters to vLLM (text head
  size 128 with mrope_section [8, 12, 12], a vision tower with patch 14 and merge 2), a byte-level
  tokenizer carrying GLM's special tokens (vLLM's GLM-4.1V processor looks up the video tokens even
  for image requests) and GLM-4.1V's own preprocessor values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# GLM-4.1V's chat format, reduced to what the tests send: [gMASK]<sop>, a role tag per message,
# each image as <|begin_of_image|><|image|><|end_of_image|> (vLLM expands <|image|>).
GLM_CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

GLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<think>",
    "</think>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
)

# GLM-4.1V-9B's preprocessor_config.json values (the real model's, not made up for the test).
GLM_PREPROCESSOR: dict[str, Any] = {
    "size": {"shortest_edge": 12544, "longest_edge": 9633792},
    "do_rescale": True,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Glm4vImageProcessor",
    "processor_class": "Glm4vProcessor",
}


def _randomize(model: Any, seed: int) -> None:
    """Deterministic random weights, scaled so that activations stay finite in bf16."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def build_llama(directory: Path, max_positions: int = 2048) -> Path:
    """The built-in engine's tiny Llama (its byte-level tokenizer and seeded weights) with a chat template."""
    from autoglm_server.engine import builtin_models

    tokenizer = builtin_models.build_tokenizer()
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    model = builtin_models.build_model(tokenizer)
    model.config.max_position_embeddings = max_positions
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _glm_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from autoglm_server.engine.builtin_models import _byte_symbols

    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    for special in GLM_SPECIAL_TOKENS:
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(GLM_SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = GLM_CHAT_TEMPLATE
    return tokenizer


def build_glm4v(directory: Path) -> Path:
    """A ~3M-parameter Glm4vForConditionalGeneration with GLM-4.1V's processor files."""
    import torch
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    tokenizer = _glm_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in GLM_SPECIAL_TOKENS}
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head size 128, as in the 9B
        "num_key_value_heads": 1,
        "max_position_embeddings": 8192,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [8, 12, 12],
            "partial_rotary_factor": 0.5,
        },
        "eos_token_id": eos,
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": 2,
        "hidden_size": 128,
        "num_heads": 2,
        "intermediate_size": 256,
        "out_hidden_size": 256,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "image_size": 336,
    }
    config = Glm4vConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        eos_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):
        model = Glm4vForConditionalGeneration(config)
    _randomize(model, seed=4321)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(GLM_PREPROCESSOR, indent=2))
    video = {**GLM_PREPROCESSOR, "video_processor_type": "Glm4vVideoProcessor"}
    video.pop("image_processor_type")
    (directory / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (directory / "chat_template.jinja").write_text(GLM_CHAT_TEMPLATE)
    return directory
