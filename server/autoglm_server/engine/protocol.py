"""The interface between the servicer and any engine implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from autoglm_server.engine.types import (
    ChatMessage,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    ModelDescription,
    RenderedPrompt,
)


class Engine(Protocol):
    """An engine generates for many requests at once.

    `submit` admits a request or raises an `autoglm_server.errors.AutoglmError` subclass at once
    (OverloadedError with a retry estimate, RequestTooLargeError). The returned iterator yields the
    request's deltas; the last one has finish_reason set. If the request fails inside the engine
    (deadline, out of memory, engine death) the iterator raises the matching AutoglmError.
    Closing the iterator early (client cancel) aborts the request and frees its slot at the next step.
    """

    @property
    def model(self) -> ModelDescription:
        """What is served; valid once start() returned."""

    async def start(self) -> None:
        """Load the model and run a warm-up step; return when ready to serve."""

    async def submit(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Admit a request (or raise at once) and return its stream of deltas."""

    def abort(self, request_id: str) -> None:
        """Stop a request wherever it is (queued or running); idempotent."""

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        """Token ids of a text, with the served model's tokenizer."""

    def render_chat(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        """Render a conversation with the served model's chat template, ready for a reply.

        Raises InvalidRequestError("messages", ...) when there is no chat template, or when the
        messages hold images and the model takes none (or more than it takes). May take
        milliseconds: the caller runs long conversations in a thread.
        """

    def stats(self) -> EngineStats:
        """A snapshot of running, waiting and reserved work."""

    def add_fatal_listener(self, listener: Callable[[BaseException], None]) -> None:
        """Call listener (from any thread) if the engine loop dies; the daemon then exits non-zero."""

    def set_step_listener(self, listener: Callable[[int], None]) -> None:
        """Call listener on the engine thread after each forward step with its batch size."""

    async def shutdown(self) -> None:
        """Stop the engine loop and free the model."""
