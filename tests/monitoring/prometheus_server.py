"""Run a real Prometheus server on 127.0.0.1 for a test, and read its HTTP API."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_tools import write_rules

START_TIMEOUT_S = 30.0


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def api(self, path: str) -> Any:
        """The `data` of a GET on the HTTP API (for example /api/v1/alerts)."""
        with urllib.request.urlopen(self.url + path, timeout=5) as reply:
            body = json.load(reply)
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def alert_states(self) -> dict[str, set[str]]:
        """alertname -> the states ("pending", "firing") its alerts are in now."""
        states: dict[str, set[str]] = {}
        for alert in self.api("/api/v1/alerts")["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(target: str, rules: Path, interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "autoglm", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }


def _wait_ready(prom: Prometheus) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if prom.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {prom.process.returncode}:\n{prom.log()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(prom.url + "/-/ready", timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"prometheus not ready in {START_TIMEOUT_S} s:\n{prom.log()}")


@contextlib.contextmanager
def running_prometheus(
    binary: str, workdir: Path, *, target: str, groups: list[dict[str, Any]], interval: str = "1s"
) -> Iterator[Prometheus]:
    """Prometheus scraping TARGET every INTERVAL and evaluating GROUPS, until the block ends."""
    rules = write_rules(groups, workdir / "rules.yaml")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(target, rules, interval)))
    port = _free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(prom)
        yield prom
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
