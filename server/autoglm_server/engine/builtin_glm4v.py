"""`builtin:glm4v-tiny`: a random-weight GLM-4.1V (AutoGLM-Phone-9B's architecture), built in code.

Nothing is downloaded. It is shaped like the 9B where serving depends on the shape: a text head of
size 128 with mrope_section [8, 12, 12] (3-D rotary positions), a vision tower with patch 14,
temporal patch 2 and spatial merge 2, and GLM-4.1V-9B's own preprocessor values (so a 1080x2400
screenshot becomes the same grid, and the same number of visual tokens, as on the real model). The
tokenizer is byte-level (any text round-trips) plus GLM's special tokens (vLLM's GLM-4.1V processor
looks up the video tokens even for image requests), and `<answer>`/`</answer>` as single tokens, the
markers Open-AutoGLM's client parses. Stops are GLM's: <|endoftext|>, <|user|>, <|observation|>.
Its text is meaningless; what it proves is the serving path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GLM4V_SEED = 4321

# GLM-4.1V's chat format, reduced to what an agent sends: [gMASK]<sop>, a role tag per message,
# each image as <|begin_of_image|><|image|><|end_of_image|> (the engine expands <|image|> into the
# image's visual tokens).
CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = (
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
# Plain-text markers of Open-AutoGLM's answers: single tokens that decode to their text.
ANSWER_TOKENS = ("<answer>", "</answer>")
STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")

# GLM-4.1V-9B's preprocessor_config.json values (the real model's, not made up).
PREPROCESSOR: dict[str, Any] = {
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

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head size 128, as in the 9B
    "num_key_value_heads": 1,
    # transformers' GLM-4.1V always gives q/k/v a bias; vLLM's (Glm4ForCausalLM) builds them only when
    # the config says so and otherwise drops the checkpoint's biases without a word (the 9B's config
    # says true). Without this key vLLM's first token differed from transformers' by a logprob of 0.9.
    "attention_bias": True,
    # Open-AutoGLM's system prompt is ~6k byte tokens, a screenshot ~3.4k visual tokens.
    "max_position_embeddings": 32768,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [8, 12, 12],
        "partial_rotary_factor": 0.5,
    },
}
VISION_CONFIG: dict[str, Any] = {
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


def build_tokenizer() -> Any:
    """Byte-level BPE with GLM's special tokens and the answer markers; carries the chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from autoglm_server.engine.byte_level import byte_symbols

    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in ANSWER_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: Any) -> Any:
    """Glm4vForConditionalGeneration with weights drawn from a fixed seed (the same on every machine)."""
    import torch
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in (*SPECIAL_TOKENS, *ANSWER_TOKENS)}
    eos = [ids[token] for token in STOP_TOKENS]
    text = {**TEXT_CONFIG, "vocab_size": len(tokenizer), "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"]}
    config = Glm4vConfig(
        text_config=text,
        vision_config=VISION_CONFIG,
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )
    config.eos_token_id = eos  # not in Glm4vConfig's signature; vLLM reads it from the top-level config
    config.architectures = ["Glm4vForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):
        model = Glm4vForConditionalGeneration(config)
    model.generation_config.eos_token_id = eos
    generator = torch.Generator().manual_seed(GLM4V_SEED)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.fill_(1.0)  # norm weights and biases
            else:  # scaled so that activations stay finite in bf16
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        # Random weights favour some token whatever they see; were it a placeholder or role token the
        # text would be empty. Those tokens' output rows are zeroed (logit 0), so the model writes bytes
        # and sometimes a stop token.
        silent = [ids[token] for token in SPECIAL_TOKENS if token not in STOP_TOKENS]
        model.lm_head.weight[silent] = 0.0
    return model.eval()  # type: ignore[no-untyped-call]


def build_image_processor() -> Any:
    """GLM-4.1V's image processor with the 9B's values: the torchvision one where it is installed
    (what AutoImageProcessor picks), else the Pillow one."""
    from transformers.utils.import_utils import is_torchvision_available

    values = {key: value for key, value in PREPROCESSOR.items() if not key.endswith(("_type", "_class"))}
    if is_torchvision_available():
        from transformers import Glm4vImageProcessor

        return Glm4vImageProcessor(**values)
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    return Glm4vImageProcessorPil(**values)


def save(directory: Path) -> Path:
    """The model, tokenizer, chat template and GLM-4.1V's processor files, as a model directory."""
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    video = {**PREPROCESSOR, "video_processor_type": "Glm4vVideoProcessor"}
    video.pop("image_processor_type")
    (directory / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return directory
