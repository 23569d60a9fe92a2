"""uvicorn, embedded: the HTTP front door served from the daemon's own event loop.

The daemon owns the process's signals (SIGTERM starts its drain), so uvicorn's own signal capture
is switched off; the socket is bound here, so port 0 works and a bad address fails start-up with
one clear line. Stopping closes the listener, lets responses in flight end (the drain has already
waited for the streams) and cancels what is left after `grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from autoglm_server.errors import StartupError

logger = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon's handlers stay in place


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port} for HTTP: {error.strerror or error}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class HttpServer:
    """One uvicorn server on one socket, run as a task of the current loop."""

    def __init__(self, app: Starlette, host: str, port: int, *, grace_s: float) -> None:
        self._socket = bind_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,  # the daemon writes its own access line per request
            server_header=False,
            timeout_graceful_shutdown=max(1, round(grace_s)),
            timeout_keep_alive=30,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="autoglm-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what made uvicorn fail
                raise StartupError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        logger.info("HTTP (OpenAI-compatible) listening on port %d", self.port)

    async def stop(self) -> None:
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
