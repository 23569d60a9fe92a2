"""The OpenAI-compatible endpoints: thin adapters over the shared serving pipeline.

Each completion endpoint authenticates, reads the body under its size cap and its deadline (uvicorn
has no body timeout: its keep-alive timeout covers idle connections only), parses it, checks the
model name, hands the specs to the pipeline and relays the Generation as one JSON body or as
server-sent events. A client that closes its connection cancels the request in the engine (the
stream's task is cancelled by Starlette; a non-streaming request watches for the disconnect).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
import pydantic
from opentelemetry import trace
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from autoglm_server import names
from autoglm_server.auth.http import HttpAuthenticator
from autoglm_server.auth.principal import Principal
from autoglm_server.auth.verifier import TokenRejectedError
from autoglm_server.engine.types import ANONYMOUS_TENANT, GenerationDelta
from autoglm_server.errors import AutoglmError, CancelledError, InvalidRequestError, PayloadTooLargeError
from autoglm_server.frontends.openai import errors, schemas
from autoglm_server.frontends.openai.call import HttpCall
from autoglm_server.frontends.openai.errors import HttpError
from autoglm_server.frontends.openai.responses import SSE_DONE, Envelope, sse
from autoglm_server.frontends.openai.settings import HttpSettings
from autoglm_server.observability import log_context
from autoglm_server.observability.metrics import Metrics
from autoglm_server.serving import session
from autoglm_server.serving.pipeline import Call, Generation, ServingPipeline
from autoglm_server.serving.validate import CallContext

Body = TypeVar("Body", bound=pydantic.BaseModel)
Admit = Callable[["Call"], Awaitable[tuple[Generation, schemas.ChatCompletionRequest | schemas.CompletionRequest]]]


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    served_model_name: str
    max_request_bytes: int
    body_timeout_s: float = HttpSettings.model_fields["http_body_timeout"].default
    scope_generate: str = names.SCOPE_GENERATE
    scope_models_read: str = names.SCOPE_MODELS_READ
    access_log: bool = True
    serve_metrics: bool = True


class OpenAIFrontend:
    """Builds the Starlette app of the OpenAI-compatible API over a pipeline."""

    def __init__(
        self,
        pipeline: ServingPipeline,
        config: FrontendConfig,
        *,
        ready: Callable[[], bool],
        auth: HttpAuthenticator | None,
        metrics: Metrics | None,
        tracer: trace.Tracer,
    ) -> None:
        self._pipeline = pipeline
        self._config = config
        self._ready = ready
        self._auth = auth
        self._metrics = metrics
        self._tracer = tracer
        self._created = int(time.time())

    def app(self) -> Starlette:
        routes = [
            Route(names.OPENAI_CHAT_COMPLETIONS_PATH, self._chat, methods=["POST"]),
            Route(names.OPENAI_COMPLETIONS_PATH, self._completions, methods=["POST"]),
            Route(names.OPENAI_MODELS_PATH, self._models, methods=["GET"]),
            Route(names.HTTP_HEALTH_PATH, self._health, methods=["GET"]),
        ]
        if self._config.serve_metrics and self._metrics is not None:
            routes.append(Route(names.METRICS_PATH, self._metrics_text, methods=["GET"]))
        return Starlette(routes=routes, exception_handlers={HTTPException: _route_error})

    # ------------------------------------------------------------------ routes
    async def _health(self, request: Request) -> Response:
        # Open to probes and load balancers: it says ready or not, and nothing else.
        if self._ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def _metrics_text(self, request: Request) -> Response:
        # The router scrapes every pod every 50 ms: no span, no access line, no JWT (the mesh's
        # AuthorizationPolicy admits only the router's and Prometheus's identities to this path). The
        # body is the admin port's; rendering it costs well under a millisecond (docs/metrics.md).
        assert self._metrics is not None  # the route exists only with metrics
        return Response(self._metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def _models(self, request: Request) -> Response:
        call = self._call(request, names.OPENAI_MODELS_PATH)
        try:
            await self._authenticate(request, self._config.scope_models_read)
            self._pipeline.state.check_admission()
        except AutoglmError as error:
            return self._error(call, errors.to_http_error(error))
        model = self._pipeline.model
        card = {
            "id": self._served_name(),
            "object": "model",
            "created": self._created,
            "owned_by": "autoglm-serve",
            "root": model.model_id,
            "max_model_len": model.max_context_length,
            # What the model takes: a phone agent needs "image" (vLLM's server says nothing of this).
            "input_modalities": ["text", "image"] if model.supports_images else ["text"],
        }
        call.finish(200, grpc.StatusCode.OK)
        return JSONResponse({"object": "list", "data": [card]})

    async def _chat(self, request: Request) -> Response:
        call = self._call(request, names.OPENAI_CHAT_COMPLETIONS_PATH)

        async def admit(pipeline_call: Call) -> tuple[Generation, schemas.ChatCompletionRequest]:
            body = await self._parse(request, schemas.ChatCompletionRequest, pipeline_call)
            messages, options = self._pipeline.converted(pipeline_call, body.to_specs)
            return await self._pipeline.chat(messages, options, pipeline_call), body

        return await self._serve(request, call, "chat.completions", admit, chat=True)

    async def _completions(self, request: Request) -> Response:
        call = self._call(request, names.OPENAI_COMPLETIONS_PATH)

        async def admit(pipeline_call: Call) -> tuple[Generation, schemas.CompletionRequest]:
            body = await self._parse(request, schemas.CompletionRequest, pipeline_call)
            prompt, options = self._pipeline.converted(pipeline_call, body.to_specs)
            return await self._pipeline.generate(prompt, options, pipeline_call), body

        return await self._serve(request, call, "completions", admit, chat=False)

    # ----------------------------------------------------------- the request path
    async def _serve(
        self,
        request: Request,
        call: HttpCall,
        method: str,
        admit: Callable[
            [Call], Awaitable[tuple[Generation, schemas.ChatCompletionRequest | schemas.CompletionRequest]]
        ],
        *,
        chat: bool,
    ) -> Response:
        try:
            self._pipeline.state.check_admission()  # while loading or draining, say so before anything else
            # Not use_span's defaults: they would mark the span ERROR for every refused request (a
            # 400 or 429 is the caller's); call.finish sets ERROR for server faults (5xx) only.
            with trace.use_span(call.use(), end_on_exit=False, record_exception=False, set_status_on_exception=False):
                principal = await self._authenticate(request, self._config.scope_generate)
                context = CallContext(
                    tenant=principal.tenant if principal is not None else ANONYMOUS_TENANT,
                    deadline=None,
                    session_id=_session_id(request),
                )
                pipeline_call = Call(method=method, protocol="http", names=schemas.HTTP_FIELDS, context=context)
                generation, body = await admit(pipeline_call)
        except AutoglmError as error:
            return self._error(call, errors.to_http_error(error))
        except Exception as error:
            return self._error(call, errors.internal_error(error))
        prefix = "chatcmpl" if chat else "cmpl"
        envelope = Envelope(
            id=f"{prefix}-{generation.request.request_id}", created=int(time.time()), model=body.model, chat=chat
        )
        if body.stream:
            return StreamingResponse(
                self._events(generation, envelope, call, include_usage=body.include_usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-request-id": generation.request.request_id},
            )
        return await self._whole(request, generation, envelope, call)

    async def _events(
        self, generation: Generation, envelope: Envelope, call: HttpCall, *, include_usage: bool
    ) -> AsyncIterator[bytes]:
        code = grpc.StatusCode.OK
        first = True
        try:
            # The role rides on the first token's chunk, as vLLM's server sends it: a client that takes
            # the first chunk with content (Open-AutoGLM's time to first token) then times the model,
            # not an empty chunk sent before prefill.
            async for delta in generation:
                yield sse(envelope.chunk(delta, first=first))
                first = False
                if delta.finished and include_usage:
                    yield sse(envelope.usage_chunk(delta.usage))
            yield SSE_DONE
        except AutoglmError as error:
            failure = errors.to_http_error(error)
            code = failure.code
            yield sse(failure.body)  # the SDK raises APIError on an `error` event
            yield SSE_DONE
        except asyncio.CancelledError:  # the client went away; close() below aborts the request
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            failure = errors.internal_error(error)
            code = failure.code
            yield sse(failure.body)
            yield SSE_DONE
        finally:
            await generation.close()
            call.finish(200, code)

    async def _whole(self, request: Request, generation: Generation, envelope: Envelope, call: HttpCall) -> Response:
        whole = GenerationDelta()

        async def collect() -> None:
            async for delta in generation:
                whole.merge(delta)

        collector = asyncio.ensure_future(collect())
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not collector.done():  # the client closed its connection: nobody will read the answer
                collector.cancel()
                call.finish(499, grpc.StatusCode.CANCELLED)
                return Response(status_code=499)
            collector.result()
        except AutoglmError as error:
            return self._error(call, errors.to_http_error(error))
        except Exception as error:
            return self._error(call, errors.internal_error(error))
        finally:
            watcher.cancel()
            await generation.close()
        call.finish(200, grpc.StatusCode.OK)
        logprobs = generation.request.logprobs
        return JSONResponse(envelope.body(whole, logprobs), headers={"x-request-id": generation.request.request_id})

    # ---------------------------------------------------------------- helpers
    def _call(self, request: Request, route: str) -> HttpCall:
        return HttpCall(request, route, tracer=self._tracer, metrics=self._metrics, access_log=self._config.access_log)

    def _error(self, call: HttpCall, error: HttpError) -> Response:
        call.finish(error.status, error.code)
        return JSONResponse(error.body, status_code=error.status, headers=error.headers)

    def _served_name(self) -> str:
        return self._config.served_model_name or self._pipeline.model.model_id

    async def _authenticate(self, request: Request, scope: str) -> Principal | None:
        if self._auth is None:
            return None
        values = request.headers.getlist("authorization")
        if len(values) > 1:
            raise TokenRejectedError("duplicate", "more than one Authorization header; send exactly one")
        principal = await self._auth.check(values[0] if values else None, scope)
        log_context.set_subject(principal.subject)
        return principal

    async def _parse(self, request: Request, model: type[Body], call: Call) -> Body:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise errors.UnsupportedMediaTypeError(
                "content-type", f"the body must be sent as application/json, got {media_type or 'no content-type'}"
            )
        raw = await _read_body(request, self._config.max_request_bytes, self._config.body_timeout_s)
        body = self._pipeline.converted(call, lambda: _validate(model, raw))
        name = getattr(body, "model", "")
        if name not in {self._served_name(), self._pipeline.model.model_id}:
            raise errors.ModelNotFoundError(name, self._served_name())
        return body


def _validate(model: type[Body], raw: bytes) -> Body:
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as error:
        problems = error.errors(include_url=False)
        first = problems[0]
        where = _where([problem["loc"] for problem in problems])
        if first["type"] == "json_invalid":
            raise InvalidRequestError("body", f"the body is not valid JSON: {first['msg']}") from None
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise InvalidRequestError(where, f"{first['msg']}{more}") from None


def _where(locations: list[tuple[int | str, ...]]) -> str:
    """The field of the first problem, named as the shared rules name fields: messages[0].content.

    pydantic adds a step for each member of a union it tried (`str`, `list[...]`, `float`), which
    is no field of the request: a value that fits no member is reported at the path that all the
    problems in its top-level field share.
    """
    first = locations[0]
    same_field = [loc for loc in locations if loc[:1] == first[:1]]
    path = ""
    for steps in zip(*same_field, strict=False):
        if any(step != steps[0] for step in steps):
            break
        step = steps[0]
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
    return path or "body"


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError("body", f"the body has {declared} bytes; at most {limit} (--max-request-bytes)")
    # One deadline for the whole body, not per chunk: a client trickling a byte at a time would
    # otherwise hold its connection (and everything the request holds) for as long as it likes.
    try:
        async with asyncio.timeout(timeout_s):
            return await _collect(request, limit)
    except TimeoutError:
        raise errors.BodyTimeoutError(timeout_s) from None
    except ClientDisconnect:
        raise CancelledError("the client closed its connection before sending the whole body") from None


async def _collect(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError("body", f"the body is over {limit} bytes (--max-request-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return when the client closes its connection (the body has been read by now)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _session_id(request: Request) -> str:
    return session.session_id(request.headers.get)


async def _route_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    body = {"error": {"message": f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}",
                      "type": "invalid_request_error", "param": None, "code": None}}  # fmt: skip
    return JSONResponse(body, status_code=status)
