"""What the serving pipeline tells observability about one request (either front door).

The servicer calls these hooks; observability turns them into span events, histograms and log
fields. The no-op observer keeps the servicer testable without any of that set up.
"""

from __future__ import annotations

from typing import Protocol

from autoglm_server.engine.types import GenerationDelta, GenerationRequest


class RequestObserver(Protocol):
    """Follows one Generate call from admission to its end."""

    def on_admitted(self, request: GenerationRequest, prompt_text: str = "") -> None:
        """The engine accepted the request (it may still wait in the queue).

        `prompt_text` is the caller's prompt when it came as text ("" for token ids); it is only
        written to the logs under --log-prompts.
        """

    def on_tokens(self, delta: GenerationDelta) -> None:
        """A chunk of tokens was sent to the client (the first one marks time to first token)."""

    def on_finished(self, delta: GenerationDelta) -> None:
        """The last delta: finish reason and usage are set."""

    def on_rejected(self, reason: str) -> None:
        """The request failed before or during generation; `reason` is a short label."""


class ObserverFactory(Protocol):
    """Makes one observer per call."""

    def __call__(self, method: str, protocol: str = "grpc") -> RequestObserver: ...


class NoopObserver:
    """An observer that records nothing."""

    def on_admitted(self, request: GenerationRequest, prompt_text: str = "") -> None:
        return None

    def on_tokens(self, delta: GenerationDelta) -> None:
        return None

    def on_finished(self, delta: GenerationDelta) -> None:
        return None

    def on_rejected(self, reason: str) -> None:
        return None


def noop_observer_factory(method: str, protocol: str = "grpc") -> RequestObserver:
    return NoopObserver()
