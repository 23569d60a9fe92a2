"""The auth interceptor: verify the bearer JWT of every call except health and reflection.

Verification runs inside the handler's own task (the interceptor wraps the method handler's
behavior), so it can abort with the right status and set the caller's Principal in a contextvar
the servicer reads. Unary and streaming methods are wrapped alike. Failures are UNAUTHENTICATED
or PERMISSION_DENIED only: never UNAVAILABLE (a mesh would retry) and never INTERNAL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from autoglm_server import names
from autoglm_server.auth.context import principal_var
from autoglm_server.auth.principal import Principal
from autoglm_server.auth.verifier import ScopeMissingError, TokenRejectedError, Verifier
from autoglm_server.observability import log_context

logger = logging.getLogger(__name__)

FailureHook = Callable[[str], None]
_EXEMPT_PREFIXES = (names.HEALTH_SERVICE_PREFIX, names.REFLECTION_SERVICE_PREFIX)


def method_scopes(scope_generate: str, scope_models_read: str) -> dict[str, str]:
    """The scope each GenerationService method needs."""
    service = f"/{names.GENERATION_SERVICE_NAME}/"
    return {
        f"{service}Generate": scope_generate,
        f"{service}Chat": scope_generate,
        f"{service}Tokenize": scope_generate,
        f"{service}GetModelInfo": scope_models_read,
    }


def _authorization(metadata: Any) -> str | None:
    """The one authorization value; two are refused, since a proxy and we might each read another."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) > 1:
        raise TokenRejectedError("duplicate", "more than one authorization metadata entry; send exactly one")
    return str(values[0]) if values else None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        verifier: Verifier,
        scopes: Mapping[str, str],
        on_failure: Callable[[], FailureHook | None] = lambda: None,
    ) -> None:
        self._verifier = verifier
        self._scopes = dict(scopes)
        self._on_failure = on_failure
        # Generated servicers hand out one handler object per method: wrap each once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_EXEMPT_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, self._scopes.get(method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _check(self, context: grpc.aio.ServicerContext, scope: str | None) -> Principal:
        try:
            authorization = _authorization(context.invocation_metadata())
            principal = await self._verifier.authenticate(authorization)
            if scope is None:
                # Fail closed: a method nobody gave a scope to is not callable with a token.
                raise ScopeMissingError("(none configured for this method)")
            self._verifier.authorize(principal, scope)
            log_context.set_subject(principal.subject)  # on this RPC's log lines, access line and span
        except (TokenRejectedError, ScopeMissingError) as exc:
            await self._reject(context, exc.reason, exc.code, exc.message)
            raise AssertionError("abort() returned") from exc  # abort always raises
        except Exception as exc:
            # A bug in a check must still fail closed, as UNAUTHENTICATED: INTERNAL would hide
            # that the call was refused, and UNAVAILABLE would make a mesh retry it.
            logger.exception("auth check failed unexpectedly; refusing the call")
            code = grpc.StatusCode.UNAUTHENTICATED
            await self._reject(context, "check_error", code, "authentication failed: the token could not be checked")
            raise AssertionError("abort() returned") from exc
        return principal

    async def _reject(
        self, context: grpc.aio.ServicerContext, reason: str, code: grpc.StatusCode, message: str
    ) -> None:
        hook = self._on_failure()
        if hook is not None:
            hook(reason)
        logger.info("rejected a call: %s", message)
        await context.abort(code, message)

    def _wrap(self, handler: grpc.RpcMethodHandler, scope: str | None) -> grpc.RpcMethodHandler:
        var = principal_var()
        check = self._check
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None or handler.stream_unary is not None:
            inner_unary = handler.unary_unary or handler.stream_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = var.set(await check(context, scope))
                try:
                    return await inner_unary(request, context)
                finally:
                    var.reset(token)

            if handler.unary_unary is not None:
                return grpc.unary_unary_rpc_method_handler(unary_behavior, **kwargs)
            return grpc.stream_unary_rpc_method_handler(unary_behavior, **kwargs)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = var.set(await check(context, scope))
            try:
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a coroutine that writes with context.write()
                    await result
            finally:
                # An async generator may be finalised in another context; the var then is not ours.
                with contextlib.suppress(ValueError):
                    var.reset(token)

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(stream_behavior, **kwargs)
        return grpc.stream_stream_rpc_method_handler(stream_behavior, **kwargs)
