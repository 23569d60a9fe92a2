"""The HTTP admin server: /metrics, the JWKS endpoint, anything else for operators.

A stdlib ThreadingHTTPServer in a daemon thread: it must answer even when the event loop is busy,
and it needs no framework. Routes are registered before start(); a handler returns a Response.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


# A route gets the request headers (lower-case names) and answers a Response.
Route = Callable[[Mapping[str, str]], Response]


class AdminServer:
    """Serves registered GET routes on host:port in a background thread."""

    def __init__(self, host: str, port: int) -> None:
        self._routes: dict[str, Route] = {}
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_route(self, path: str, route: Route) -> None:
        self._routes[path] = route

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("admin server not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        routes = self._routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                route = routes.get(path)
                if route is None:
                    self._send(Response(404, b"not found\n", "text/plain; charset=utf-8"))
                    return
                try:
                    response = route({k.lower(): v for k, v in self.headers.items()})
                except Exception:
                    logger.exception("admin route %s failed", path)
                    response = Response(500, b"internal error\n", "text/plain; charset=utf-8")
                self._send(response)

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("admin %s", format % args)

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="admin-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
