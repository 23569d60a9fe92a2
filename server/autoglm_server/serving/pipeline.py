"""The one request path both front doors share: admission -> validate -> render -> engine -> observe.

A front door (the gRPC servicer, the OpenAI HTTP routes) turns its wire request into a spec
(serving/spec.py), calls `generate` or `chat` here, relays the deltas of the `Generation` it gets
back in its own wire format, and closes it at the end. Everything else happens here once: the
admission gate (starting, draining), every validation rule, tokenizing and chat rendering (off the
event loop when long), image decoding with its caps, submission to the engine (whose own admission
answers RESOURCE_EXHAUSTED), the request's observer (metrics, span, access log), the drain's count
of in-flight streams, and the cancel that reaches the engine when a caller goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from autoglm_server.engine.protocol import Engine
from autoglm_server.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    ModelDescription,
    RenderedPrompt,
)
from autoglm_server.errors import (
    AutoglmError,
    CancelledError,
    InvalidRequestError,
    RequestTooLargeError,
    UnavailableError,
)
from autoglm_server.lifecycle import ServingState
from autoglm_server.observability.hooks import ObserverFactory, RequestObserver, noop_observer_factory
from autoglm_server.serving import chat, images, validate
from autoglm_server.serving.spec import FieldNames, MessageSpec, OptionsSpec, Prompt, TextPrompt
from autoglm_server.serving.validate import CallContext, RequestLimits

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Texts up to this many characters are tokenized on the event loop (microseconds); longer ones in a thread.
INLINE_TOKENIZE_CHARS = 2048
# Conversations with more text than this, or any image, are rendered in a thread.
INLINE_RENDER_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Call:
    """Who asks, through which door: what the pipeline needs from a front door besides the request."""

    method: str  # for observers and logs: Generate, Chat, chat.completions, completions
    protocol: str  # grpc or http (the metrics' protocol label)
    names: FieldNames
    context: CallContext = field(default_factory=CallContext)


class Generation:
    """One admitted request: iterate its deltas, then close it (closing early cancels it)."""

    def __init__(
        self,
        request: GenerationRequest,
        stream: AsyncIterator[GenerationDelta],
        observer: RequestObserver,
        state: ServingState,
    ) -> None:
        self.request = request
        self._stream = stream
        self._observer = observer
        self._state = state
        self._ended = False  # finished, failed or cancelled: the observer has heard
        self._closed = False
        state.stream_started(request.request_id)

    def __aiter__(self) -> AsyncIterator[GenerationDelta]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[GenerationDelta]:
        try:
            async for delta in self._stream:
                if delta.finish_reason is FinishReason.CANCELLED and self._state.drain_expired:
                    raise _drain_cut()
                if delta.text or delta.token_ids:
                    self._observer.on_tokens(delta)
                if delta.finished:
                    self._end()
                    self._observer.on_finished(delta)
                yield delta
                if delta.finished:
                    return
        except CancelledError:
            if self._state.drain_expired:
                self._fail(_drain_cut())
                raise _drain_cut() from None
            self._fail_with("cancelled")
            raise
        except AutoglmError as error:
            self._fail(error)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            self._fail_with("internal")
            raise

    def _end(self) -> bool:
        ended, self._ended = self._ended, True
        return not ended

    def _fail(self, error: AutoglmError) -> None:
        self._fail_with(rejection_reason(error))

    def _fail_with(self, reason: str) -> None:
        if self._end():
            self._observer.on_rejected(reason)

    async def close(self) -> None:
        """Release the request: abort it in the engine if unfinished; the drain stops counting it."""
        if self._closed:
            return
        self._closed = True
        # The caller went away (or its door gave up) before the end: that is a cancel.
        self._fail_with("cancelled")
        try:
            # Close this stream (which aborts it if unfinished), never abort by request_id: another
            # call may reuse the id by now, and it is not ours to cancel.
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._state.stream_ended(self.request.request_id)


class ServingPipeline:
    """Serves requests from any front door over one Engine."""

    def __init__(
        self,
        engine: Engine,
        state: ServingState,
        *,
        limits: RequestLimits,
        image_limits: images.ImageLimits,
        observers: ObserverFactory = noop_observer_factory,
        model_id: str = "",
    ) -> None:
        """model_id: the name to describe the model by when it is not what the engine loaded (an
        s3:// URI the engine only knows as its cache folder); empty keeps the engine's."""
        self.engine = engine
        self.state = state
        self.limits = limits
        self.image_limits = image_limits
        self._observers = observers
        self._model_id = model_id

    @property
    def model(self) -> ModelDescription:
        loaded = self.engine.model
        if not self._model_id or loaded.model_id == self._model_id:
            return loaded
        return replace(loaded, model_id=self._model_id)

    def converted(self, call: Call, convert: Callable[[], T]) -> T:
        """Run a front door's wire -> spec conversion; a failure counts as a refused request."""
        try:
            return convert()
        except AutoglmError as error:
            self._observers(call.method, call.protocol).on_rejected(rejection_reason(error))
            raise

    async def generate(self, prompt: Prompt, options: OptionsSpec, call: Call) -> Generation:
        """Admit a prompt (text or token ids); raise an AutoglmError if it cannot be served."""
        observer = self._observers(call.method, call.protocol)
        try:
            self.state.check_admission()
            model = self.model
            valid = validate.check_options(options, model=model, limits=self.limits, names=call.names)
            ids, field = await self._prompt_ids(prompt, call.names)
            request = validate.build_request(valid, ids, model=model, call=call.context, prompt_field=field)
            stream = await self._submit(request)
        except BaseException as error:
            observer.on_rejected(_reason_of(error))
            raise
        prompt_text = prompt.text if isinstance(prompt, TextPrompt) else ""
        observer.on_admitted(request, prompt_text=prompt_text)
        return Generation(request, stream, observer, self.state)

    async def chat(self, messages: Sequence[MessageSpec], options: OptionsSpec, call: Call) -> Generation:
        """Admit a conversation: rendered with the model's chat template, images decoded."""
        observer = self._observers(call.method, call.protocol)
        try:
            self.state.check_admission()
            model = self.model
            valid = validate.check_options(options, model=model, limits=self.limits, names=call.names)
            chat.check_messages(messages, model, self.image_limits, call.names)
            decoded = await chat.decode_messages(messages, self.image_limits, call.names)
            rendered = await self._render(decoded)
            request = validate.build_request(
                valid,
                rendered.token_ids,
                model=model,
                call=call.context,
                prompt_field=call.names("messages"),
                prompt_text=rendered.text,
                images=rendered.images,
            )
            stream = await self._submit(request)
        except BaseException as error:
            observer.on_rejected(_reason_of(error))
            raise
        observer.on_admitted(request, prompt_text=rendered.text)
        return Generation(request, stream, observer, self.state)

    async def tokenize(self, text: str, add_special_tokens: bool, names: FieldNames) -> list[int]:
        self.state.check_admission()
        validate.check_text_size(names("text"), text, self.model)
        return await self._tokenize(text, add_special_tokens)

    async def _submit(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        # Again: a drain may have begun while a long prompt was tokenized or rendered in a thread,
        # and a stream admitted after the drain counted its in-flight streams would be cut off.
        self.state.check_admission()
        return await self.engine.submit(request)

    async def _prompt_ids(self, prompt: Prompt, names: FieldNames) -> tuple[list[int], str]:
        model = self.model
        if isinstance(prompt, TextPrompt):
            field = names("text")
            if not prompt.text:
                raise InvalidRequestError(field, "the prompt must not be empty")
            validate.check_text_size(field, prompt.text, model)
            return await self._tokenize(prompt.text, True), field
        field = names("token_ids")
        ids = validate.check_token_ids("token_ids", prompt.token_ids, model.vocab_size, names, allow_empty=False)
        return ids, field

    async def _tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        # A long text takes milliseconds to tokenize: off the event loop, so other streams go on.
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return self.engine.tokenize(text, add_special_tokens)
        return await asyncio.to_thread(self.engine.tokenize, text, add_special_tokens)

    async def _render(self, messages: list[ChatMessage]) -> RenderedPrompt:
        heavy = any(m.images for m in messages) or sum(len(m.text) for m in messages) > INLINE_RENDER_CHARS
        if not heavy:
            return self.engine.render_chat(messages)
        return await asyncio.to_thread(self.engine.render_chat, messages)


def _drain_cut() -> UnavailableError:
    return UnavailableError("the server shut down before this stream finished (drain timeout reached)")


def rejection_reason(error: AutoglmError) -> str:
    """The short label of a failure, for the rejections metric and the span."""
    if isinstance(error, RequestTooLargeError):
        return "too_long"
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason.replace("_", "").isalpha():
        return reason
    return str(error.code.name).lower()


def _reason_of(error: BaseException) -> str:
    if isinstance(error, AutoglmError):
        return rejection_reason(error)
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "internal"
