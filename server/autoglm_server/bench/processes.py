"""Servers under test as subprocesses: started on 127.0.0.1, polled on /health, stopped by pid.

Used for the daemon with both front doors (any engine, any interpreter: the vLLM engine lives in
its own environment) and, through `peer.py`, for vLLM's own OpenAI server. Each server runs in a
session of its own, so that stopping it also reaches the engine-core processes vLLM spawns: the
group is signalled by the server's own pid (a process group id is its leader's pid).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("autoglm_server.bench")

START_TIMEOUT_S = 600.0
_STOP_TIMEOUT_S = 60.0


@dataclass
class Server:
    """A running server under test."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http_url: str  # the OpenAI base URL, ending in /v1
    grpc_target: str | None = None
    started_s: float = 0.0  # seconds from the start to ready

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


def spawn(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `command` in a new session (its own process group), output into `log_path`."""
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    merged.update(env or {})
    with log_path.open("wb") as out:
        return subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=merged, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server, wait, then SIGKILL its process group; leaves no child behind."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Engine-core children may outlive a leader that was killed; they share its group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_healthy(process: subprocess.Popen[bytes], health_url: str, log_path: Path, timeout: float) -> float:
    """Poll GET `health_url` until 200; returns the seconds it took. Fails if the process exits."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"{health_url}: the server exited with {process.returncode}:\n{tail}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(health_url, timeout=5.0) as reply,  # noqa: S310 - our own 127.0.0.1 server
        ):
            if reply.status == 200:
                return time.monotonic() - start
        time.sleep(0.25)
    raise RuntimeError(f"{health_url} was not healthy within {timeout:.0f} s")


def _read_ports(process: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"the daemon exited with {process.returncode} before serving:\n{tail}")
        with contextlib.suppress(ValueError, OSError):
            ports = json.loads(port_file.read_text())
            if ports.get("grpc_port") and ports.get("http_port"):
                return {key: int(value) for key, value in ports.items()}
        time.sleep(0.1)
    raise RuntimeError(f"the daemon did not write its ports within {timeout:.0f} s")


@contextlib.contextmanager
def running_daemon(
    name: str,
    python: str,
    model: str,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[Server]:
    """`python -m autoglm_server serve` with the gRPC and HTTP front doors on port 0, auth off."""
    with tempfile.TemporaryDirectory(prefix=f"autoglm-bench-{name.replace(' ', '-')}-") as tmp:
        port_file = Path(tmp) / "ports.json"
        log_path = Path(tmp) / "server.log"
        command = [
            python, "-m", "autoglm_server", "serve", "--auth", "disabled",
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "",
            "--port-file", str(port_file), "--model", model, *extra_args,
        ]  # fmt: skip
        log.info("starting %s: %s", name, " ".join(command))
        begin = time.monotonic()
        process = spawn(command, log_path, env)
        try:
            ports = _read_ports(process, port_file, log_path, timeout)
            http = f"http://127.0.0.1:{ports['http_port']}"
            wait_healthy(process, f"{http}/health", log_path, timeout)
            server = Server(
                name, process, log_path, f"{http}/v1", f"127.0.0.1:{ports['grpc_port']}", time.monotonic() - begin
            )
            log.info("%s ready in %.1f s", name, server.started_s)
            yield server
        finally:
            stop(process)


def start_all(
    stack: contextlib.ExitStack, starting: Mapping[str, contextlib.AbstractContextManager[Server]]
) -> dict[str, Server]:
    """Enter every server's context at once (vLLM's start is mostly waiting), register each exit
    on `stack`; if one fails to start, the ones that did are stopped by the stack and the error raised."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(starting))) as pool:
        futures = {name: pool.submit(manager.__enter__) for name, manager in starting.items()}
    servers: dict[str, Server] = {}
    failure: BaseException | None = None
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            servers[name] = future.result()
            stack.push(starting[name].__exit__)
        elif failure is None:
            failure = error
    if failure is not None:
        raise RuntimeError(f"a server did not start: {failure}") from failure
    return servers
