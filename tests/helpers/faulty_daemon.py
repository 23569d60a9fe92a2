"""The real daemon with a fault-injection seam that a test drives from outside the process.

`python tests/helpers/faulty_daemon.py serve ...` runs `autoglm-server serve` unchanged except that
its engine is built with a fault injector (the runner's seam, engine/builtin/runner.py FaultInjector). The
injector reads RELIABILITY_FAULT_FILE before each forward pass; a test writes one command there:

    <id> oom <prefill|decode> <count>   raise torch.OutOfMemoryError in the next <count> such passes
    <id> fatal <prefill|decode>         raise RuntimeError in the next such pass (the engine dies)

Each <id> is applied once. Only this launcher and the tests use it: the daemon has no such flag.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

FAULT_FILE_ENV = "RELIABILITY_FAULT_FILE"


class FileFaults:
    """A FaultInjector driven by the commands in a file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._seen: set[str] = set()
        self._armed: dict[str, tuple[str, int]] = {}  # phase -> (kind, remaining)
        self._version: tuple[int, int] = (0, 0)

    def _reload(self) -> None:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return
        version = (stat.st_ino, stat.st_mtime_ns)  # inject() renames a new file into place
        if version == self._version:
            return
        self._version = version
        for line in Path(self._path).read_text().splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[0] in self._seen:
                continue
            self._seen.add(parts[0])
            count = int(parts[3]) if parts[1] == "oom" and len(parts) > 3 else 1
            self._armed[parts[2]] = (parts[1], count)

    def __call__(self, phase: str) -> None:
        self._reload()
        armed = self._armed.get(phase)
        if armed is None:
            return
        kind, remaining = armed
        if remaining <= 1:
            del self._armed[phase]
        else:
            self._armed[phase] = (kind, remaining - 1)
        if kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"injected out of memory in {phase}")
        raise RuntimeError(f"injected fatal error in {phase}")


def _install() -> None:
    from autoglm_server.engine.builtin import async_engine
    from autoglm_server.engine.settings import EngineSettings

    path = os.environ[FAULT_FILE_ENV]
    original = async_engine.AsyncEngine

    def create_engine(settings: EngineSettings) -> async_engine.AsyncEngine:
        return original(settings, fault_injector=FileFaults(path))

    # cli._serve imports create_engine from this module when it runs, so this takes effect.
    async_engine.create_engine = create_engine


@contextlib.contextmanager
def running_faulty_daemon(*extra_args: str, env: Mapping[str, str] | None = None) -> Iterator[tuple[object, Path]]:
    """Like daemon.running_daemon, with the fault seam; yields (Daemon, fault file)."""
    from tests.helpers import daemon as helper

    with tempfile.TemporaryDirectory(prefix="autoglm-faulty-") as workdir:
        fault_file = Path(workdir) / "faults"
        port_file = Path(workdir) / "ports.json"
        log_path = Path(workdir) / "daemon.log"
        command = helper.daemon_command(*extra_args, port_file=port_file)
        command[1:3] = [str(Path(__file__).resolve())]  # replace "-m autoglm_server"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=helper._daemon_env({**(env or {}), FAULT_FILE_ENV: str(fault_file)}),
            )
        try:
            running = helper._wait_for_ports(process, port_file, log_path, helper.START_TIMEOUT_S)
            helper._wait_ready(running, helper.START_TIMEOUT_S)
            yield running, fault_file
        finally:
            helper._stop(process)


def inject(fault_file: Path, command: str) -> None:
    """Arm one fault (a command line without its id)."""
    existing = fault_file.read_text() if fault_file.exists() else ""
    staging = fault_file.with_suffix(".tmp")
    staging.write_text(existing + f"f{existing.count(chr(10))} {command}\n")
    staging.replace(fault_file)


if __name__ == "__main__":
    _install()
    from autoglm_server.cli import main

    sys.exit(main())
