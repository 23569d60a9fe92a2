"""Render a conversation with a Hugging Face tokenizer's chat template (the built-in engine's way).

The template is the model's own (`tokenizer.chat_template`) unless the operator gives one with
--chat-template FILE; builtin:tiny and builtin:small get BUILTIN_CHAT_TEMPLATE so that chat works on
the default model. transformers renders templates in a sandboxed Jinja environment, so a template
cannot reach the file system or Python internals; a template that refuses the conversation (many
raise on roles out of order) becomes INVALID_ARGUMENT with its own message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoglm_server.engine.types import ChatMessage, RenderedPrompt
from autoglm_server.errors import InvalidRequestError, StartupError

# Role markers on their own line; the BOS token first, as a text prompt gets it from the tokenizer.
BUILTIN_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def read_template_file(path: str) -> str:
    """The operator's --chat-template file (read once at start-up)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise StartupError(f"cannot read --chat-template {path}: {error.strerror or error}") from None
    if not text.strip():
        raise StartupError(f"--chat-template {path} is empty")
    return text


class ChatRenderer:
    """Renders text-only conversations for a model without vision."""

    def __init__(self, tokenizer: Any, template: str | None) -> None:
        self._tokenizer = tokenizer
        self._template = template or getattr(tokenizer, "chat_template", None) or None

    @property
    def available(self) -> bool:
        return self._template is not None

    def render(self, messages: Sequence[ChatMessage], model_id: str) -> RenderedPrompt:
        if self._template is None:
            raise InvalidRequestError(
                "messages", f"model {model_id} has no chat template; start the server with --chat-template FILE"
            )
        for index, message in enumerate(messages):
            if message.images:
                raise InvalidRequestError(f"messages[{index}]", f"model {model_id} takes no images; send text only")
        conversation = [{"role": message.role, "content": message.text} for message in messages]
        try:
            text = self._tokenizer.apply_chat_template(
                conversation, chat_template=self._template, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # jinja2's TemplateError (and the template's raise_exception)
            raise InvalidRequestError("messages", f"the chat template refused the conversation: {error}") from None
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return RenderedPrompt(token_ids=tuple(ids), text=str(text))
