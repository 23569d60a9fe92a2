"""Run the real daemon as a subprocess and drive it with the SDK's load generator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Daemon:
    """A daemon under test: its gRPC target, its admin URL (/metrics) and its pid."""

    target: str
    admin_url: str
    pid: int


@contextmanager
def running_daemon(model: str, dtype: str, device: str, torch_threads: int, max_running: int) -> Iterator[Daemon]:
    """Start `autoglm-server serve` on 127.0.0.1 port 0; yield where it serves; stop it by pid."""
    with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as tmp:
        port_file = Path(tmp) / "ports.json"
        log_path = Path(tmp) / "daemon.log"
        command = [
            sys.executable, "-m", "autoglm_server", "serve",
            "--auth", "disabled", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",  # /metrics: the engine's step timers
            "--port-file", str(port_file), "--model", model, "--dtype", dtype, "--device", device,
            "--torch-threads", str(torch_threads), "--max-running", str(max_running),
            "--max-waiting", str(max(256, 4 * max_running)),
            # The bench measures throughput, not load shedding: on a busy shared machine a prefill
            # step of a large model can outlast the default 30 s a request may wait for a row.
            "--max-queue-time", str(_START_TIMEOUT_S),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            ports = _wait_for_port(process, port_file, log_path)
            yield Daemon(f"127.0.0.1:{ports['grpc_port']}", f"http://127.0.0.1:{ports['admin_port']}", process.pid)
        finally:
            _stop(process)


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path, log_path: Path) -> dict[str, int]:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited with {process.returncode} before serving:\n{tail}")
        if port_file.exists():
            try:
                ports = json.loads(port_file.read_text())
                if ports["grpc_port"] and ports["admin_port"]:
                    return {"grpc_port": int(ports["grpc_port"]), "admin_port": int(ports["admin_port"])}
            except (ValueError, KeyError):
                pass  # written but not complete yet
        time.sleep(0.1)
    raise RuntimeError(f"the daemon did not serve within {_START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_ready(target: str) -> None:
    """Poll grpc.health.v1 readiness until the daemon reports SERVING (the model is loaded)."""
    import asyncio

    from autoglm_client.aio import AsyncClient
    from autoglm_client.errors import AutoglmError
    from autoglm_client.types import HealthStatus
    from autoglm_server.names import READINESS_SERVICE

    client = AsyncClient(target, retry=None)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if await client.health(READINESS_SERVICE, timeout=5.0) == HealthStatus.SERVING:
                    return
            except AutoglmError:
                pass  # not up yet
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the daemon at {target} did not become ready")
    finally:
        await client.close()
