"""Tiny random-weight models for the vLLM tests, built from configs and saved to a directory.

Nothing is downloaded. Both models are meaningless (random weights); what they prove is the serving
path: vLLM loads them, schedules them and streams from them like the real thing.

- a Llama with the built-in engine's byte-level tokenizer plus a chat template (head size 64, which
  vLLM's CPU attention supports);
- builtin:glm4v-tiny (engine/builtin_glm4v.py), the GLM-4.1V the built-in engine serves too, saved
  with its processor files, so both engines run the very same weights.
"""

from __future__ import annotations

from pathlib import Path

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


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


def build_glm4v(directory: Path) -> Path:
    """builtin:glm4v-tiny (~3M parameters) with GLM-4.1V's processor files."""
    from autoglm_server.engine import builtin_glm4v

    return builtin_glm4v.save(directory)
