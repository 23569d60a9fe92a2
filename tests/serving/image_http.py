"""A real HTTP listener on 127.0.0.1 (stdlib http.server in a thread) that counts every connection,
for proving which image URLs the daemon fetches and which it never contacts."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Listener:
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    routes: dict[str, Route]
    connections: int = 0
    paths: list[str] = field(default_factory=list)
    # How many body bytes a route managed to send before the client hung up (oversize tests).
    sent: dict[str, int] = field(default_factory=dict)
    body_done: threading.Event = field(default_factory=threading.Event)  # set when an endless route ends
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start() -> Listener:
    """Serve `listener.routes` (path -> handler writing the whole response) on 127.0.0.1 port 0."""
    listener: Listener

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with listener.lock:
                listener.paths.append(self.path)
            route = listener.routes.get(self.path.partition("?")[0])
            if route is None:
                self.send_error(404)
                return
            route(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    class CountingServer(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            conn = super().get_request()
            with listener.lock:
                listener.connections += 1
            return conn

    server = CountingServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="image-http-listener", daemon=True
    )
    listener = Listener(server, thread, {})
    thread.start()
    return listener


def send_body(handler: http.server.BaseHTTPRequestHandler, body: bytes, content_type: str = "image/png") -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def redirect(location: str) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def endless(listener: Listener, name: str, chunk: bytes, *, delay_s: float = 0.0) -> Route:
    """A body with no Content-Length that goes on until the client hangs up (or 64 MiB)."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        try:
            while sent < 64 * 2**20:
                handler.wfile.write(chunk)
                handler.wfile.flush()
                sent += len(chunk)
                if delay_s:
                    time.sleep(delay_s)
        except OSError:
            pass  # the client hung up: what the test wants
        finally:
            listener.sent[name] = sent
            listener.body_done.set()
            handler.close_connection = True

    return route
