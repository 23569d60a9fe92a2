"""The interface between the servicer and any engine implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from autoglm_server.engine.types import EngineStats, GenerationDelta, GenerationRequest, ModelDescription


class Engine(Protocol):
    """An engine generates for many requests at once.

    `generate` raises an `autoglm_server.errors.AutoglmError` subclass when the request cannot be
    admitted (overload, too large); closing the returned iterator early (client cancel, deadline)
    aborts the request and frees its slot.
    """

    @property
    def model(self) -> ModelDescription: ...

    async def start(self) -> None:
        """Load the model and run a warm-up step; return when ready to serve."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the deltas of one request; the last one has finish_reason set."""

    def abort(self, request_id: str) -> None:
        """Stop a request wherever it is (queued or running); idempotent."""

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        """Token ids of a text, with the served model's tokenizer."""

    def stats(self) -> EngineStats:
        """A snapshot of running, waiting and reserved work."""

    async def shutdown(self) -> None:
        """Stop the engine loop and free the model."""
