"""The GenerationService servicer: validate -> engine -> convert. Thin, no torch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server import convert, status
from autoglm_server.engine.protocol import Engine
from autoglm_server.engine.types import ANONYMOUS_TENANT, FinishReason, GenerationDelta
from autoglm_server.errors import AutoglmError, CancelledError, RequestTooLargeError, UnavailableError
from autoglm_server.lifecycle import ServingState
from autoglm_server.observability.hooks import ObserverFactory, RequestObserver, noop_observer_factory

logger = logging.getLogger(__name__)

# Texts up to this many characters are tokenized on the event loop (microseconds); longer ones in a thread.
INLINE_TOKENIZE_CHARS = 2048

# Who made the call (tenant used for fair share); the auth layer supplies it once enabled.
TenantLookup = Callable[[], str]


def _anonymous() -> str:
    return ANONYMOUS_TENANT


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """Serves autoglm.v1.GenerationService over an Engine."""

    def __init__(
        self,
        engine: Engine,
        state: ServingState,
        *,
        limits: convert.RequestLimits,
        model_version: str,
        auth_enabled: bool,
        observers: ObserverFactory = noop_observer_factory,
        tenant_lookup: TenantLookup = _anonymous,
    ) -> None:
        self._engine = engine
        self._state = state
        self._limits = limits
        self._model_version = model_version
        self._auth_enabled = auth_enabled
        self._observers = observers
        self._tenant_lookup = tenant_lookup

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        observer = self._observers("Generate")
        try:
            self._state.check_admission()
            prompt_ids = await self._tokenize_prompt(request)
            domain = convert.to_generation_request(
                request,
                model=self._engine.model,
                limits=self._limits,
                tokenize=lambda _text: prompt_ids,
                call=convert.CallContext(tenant=self._tenant_lookup(), deadline=_deadline(context)),
            )
            # Again: a drain may have begun while a long prompt was tokenized in a thread, and a
            # stream admitted after the drain counted its in-flight streams would be cut off.
            self._state.check_admission()
            stream = await self._engine.submit(domain)
        except AutoglmError as error:
            observer.on_rejected(_reason(error))
            await status.abort(context, status.to_grpc_status(error))
            return
        except Exception as error:
            observer.on_rejected("internal")
            await status.abort(context, status.internal_status(error))
            return
        observer.on_admitted(domain, prompt_text=request.text)
        self._state.stream_started(domain.request_id)
        try:
            yield convert.started_message(domain, self._engine.model)
            async for delta in self._relay(stream, observer):
                yield delta
        except AutoglmError as error:
            observer.on_rejected(_reason(error))
            await status.abort(context, status.to_grpc_status(error))
        except asyncio.CancelledError:
            observer.on_rejected("cancelled")
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            observer.on_rejected("internal")
            await status.abort(context, status.internal_status(error))
        finally:
            # Close this stream (which aborts it if unfinished), never abort by request_id: by now
            # another call may have reused the id, and it is not ours to cancel.
            await _close(stream)
            self._state.stream_ended(domain.request_id)

    async def _relay(
        self, stream: AsyncIterator[GenerationDelta], observer: RequestObserver
    ) -> AsyncIterator[pb.GenerateResponse]:
        try:
            async for delta in stream:
                if delta.finish_reason is FinishReason.CANCELLED and self._state.drain_expired:
                    raise _drain_cut()
                if delta.text or delta.token_ids:
                    observer.on_tokens(delta)
                    yield convert.chunk_message(delta)
                if delta.finished:
                    observer.on_finished(delta)
                    yield convert.finished_message(delta)
                    return
        except CancelledError:
            if self._state.drain_expired:
                raise _drain_cut() from None
            raise
        finally:
            await _close(stream)

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        try:
            self._state.check_admission()
            convert.check_text_size("text", request.text, self._engine.model)
            ids = await self._tokenize(request.text, request.add_special_tokens)
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
            raise  # unreachable: abort raises
        except Exception as error:
            await status.abort(context, status.internal_status(error))
            raise  # unreachable: abort raises
        return pb.TokenizeResponse(token_ids=ids, count=len(ids))

    async def _tokenize_prompt(self, request: pb.GenerateRequest) -> list[int]:
        """The ids of a text prompt (checked for size first); [] for a token-id prompt."""
        if request.WhichOneof("prompt") != "text" or not request.text:
            return []
        convert.check_text_size("text", request.text, self._engine.model)
        return await self._tokenize(request.text, True)

    async def _tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        # A long text takes milliseconds to tokenize: off the event loop, so other streams go on.
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return self._engine.tokenize(text, add_special_tokens)
        return await asyncio.to_thread(self._engine.tokenize, text, add_special_tokens)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        try:
            self._state.check_admission()
        except AutoglmError as error:
            await status.abort(context, status.to_grpc_status(error))
        return convert.model_info_message(
            self._engine.model,
            model_version=self._model_version,
            max_new_tokens_limit=self._limits.max_new_tokens_limit,
            auth_enabled=self._auth_enabled,
        )


async def _close(stream: AsyncIterator[GenerationDelta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(float(remaining), 0.0)


def _drain_cut() -> UnavailableError:
    return UnavailableError("the server shut down before this stream finished (drain timeout reached)")


def _reason(error: AutoglmError) -> str:
    if isinstance(error, RequestTooLargeError):
        return "too_long"
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason.replace("_", "").isalpha():
        return reason
    return str(error.code.name).lower()
