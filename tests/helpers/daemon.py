"""Start the real daemon as a subprocess on 127.0.0.1 with port 0, and stop it by its pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoglm_server import names

START_TIMEOUT_S = 120.0


@dataclass
class Daemon:
    """A running daemon: where to reach it and how to stop it."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    admin_port: int
    log_path: Path
    http_port: int = 0

    @property
    def http_url(self) -> str:
        """The OpenAI-compatible API's base URL (what the openai SDK takes as base_url)."""
        return f"http://127.0.0.1:{self.http_port}/v1"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health(self, service: str = names.READINESS_SERVICE, timeout: float = 2.0) -> int:
        """The health status code of service (health_pb2.HealthCheckResponse.ServingStatus)."""
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return int(reply.status)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


def daemon_command(*extra_args: str, port_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "autoglm_server",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        *extra_args,
    ]


def _daemon_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = {key: value for key, value in os.environ.items() if not key.startswith(("AUTOGLM_", "OTEL_", "VAULT_"))}
    # Two cores are shared by the test process and the daemon: keep torch from oversubscribing.
    merged.setdefault("AUTOGLM_TORCH_THREADS", "1")
    merged["PYTHONUNBUFFERED"] = "1"
    merged.update(env or {})
    return merged


@contextlib.contextmanager
def running_daemon(
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[Daemon]:
    """Run `autoglm-server serve` until the block ends; kill it by pid if it outlives the block."""
    with tempfile.TemporaryDirectory(prefix="autoglm-daemon-") as workdir:
        port_file = Path(workdir) / "ports.json"
        log_path = Path(workdir) / "daemon.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                daemon_command(*extra_args, port_file=port_file),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_daemon_env(env),
            )
        try:
            daemon = _wait_for_ports(process, port_file, log_path, timeout)
            if wait_ready:
                _wait_ready(daemon, timeout)
            yield daemon
        finally:
            _stop(process)


def _wait_for_ports(process: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout: float) -> Daemon:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            ports = json.loads(port_file.read_text())
            return Daemon(
                process, int(ports["grpc_port"]), int(ports["admin_port"]), log_path, int(ports.get("http_port", 0))
            )
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"daemon did not bind in {timeout} s:\n{log_path.read_text()}")


def _wait_ready(daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()}")
        with contextlib.suppress(grpc.RpcError):
            if daemon.health() == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.1)
    raise TimeoutError(f"daemon not ready in {timeout} s:\n{daemon.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
