"""The verified caller of the current RPC, readable anywhere in the task that runs its handler.

The auth interceptor sets it just before it calls the servicer's method, in that RPC's own task.
"""

from __future__ import annotations

from contextvars import ContextVar

from autoglm_server.auth.principal import Principal

_principal: ContextVar[Principal | None] = ContextVar("autoglm_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled; None when auth is disabled or outside an RPC."""
    return _principal.get()


def principal_var() -> ContextVar[Principal | None]:
    """The context variable itself, for the interceptor (and tests) that set it."""
    return _principal
