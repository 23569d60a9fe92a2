"""`python -m tests.openai.vision_standin [serve flags]`: the real daemon over a STAND-IN for a vision engine.

NOT a vision model. builtin:tiny has no vision, so a request with images is refused ("takes no
images") before any image rule is reached. To test those rules end to end (HTTP, the shared
pipeline, the image caps set by the daemon's own flags) this wraps the real built-in AsyncEngine
so that it reports supports_images and renders each image as a text placeholder naming its size.
The real vision engine is vLLM's, tested elsewhere; nothing here stands for how it renders images.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from autoglm_server.app import Daemon
from autoglm_server.config import load_settings
from autoglm_server.engine.builtin.async_engine import AsyncEngine, create_engine
from autoglm_server.engine.types import (
    ChatMessage,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    ImagePart,
    ModelDescription,
    RenderedPrompt,
    TextPart,
)
from autoglm_server.errors import StartupError
from autoglm_server.observability.logging_setup import configure_logging


def placeholder(width: int, height: int) -> str:
    """The text an image becomes in the stand-in's prompt."""
    return f"<image {width}x{height}>"


class VisionStandIn:
    """The built-in engine, reporting vision; images become placeholders in the rendered text."""

    def __init__(self, inner: AsyncEngine) -> None:
        self._inner = inner

    @property
    def model(self) -> ModelDescription:
        # No per-model cap: --limit-images-per-request is the one that applies.
        return replace(self._inner.model, supports_images=True, max_images_per_request=0)

    def render_chat(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        as_text = [
            ChatMessage(
                role=message.role,
                content=tuple(
                    TextPart(placeholder(part.image.width, part.image.height)) if isinstance(part, ImagePart) else part
                    for part in message.content
                ),
            )
            for message in messages
        ]
        rendered = self._inner.render_chat(as_text)
        images = tuple(image for message in messages for image in message.images)
        return RenderedPrompt(token_ids=rendered.token_ids, text=rendered.text, images=images)

    # Everything else is the built-in engine's own.
    async def start(self) -> None:
        await self._inner.start()

    async def submit(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        return await self._inner.submit(request)

    def abort(self, request_id: str) -> None:
        self._inner.abort(request_id)

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        return self._inner.tokenize(text, add_special_tokens)

    def stats(self) -> EngineStats:
        return self._inner.stats()

    def add_fatal_listener(self, listener: Callable[[BaseException], None]) -> None:
        self._inner.add_fatal_listener(listener)

    def set_step_listener(self, listener: Callable[[int], None]) -> None:
        self._inner.set_step_listener(listener)

    async def shutdown(self) -> None:
        await self._inner.shutdown()


def main(argv: Sequence[str]) -> int:
    settings = load_settings(argv)
    configure_logging(settings)
    try:
        return asyncio.run(Daemon(settings, VisionStandIn(create_engine(settings))).run())
    except StartupError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
