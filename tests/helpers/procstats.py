"""Resource figures of another process, read from /proc (Linux): RSS, peak RSS, open fds, threads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessSample:
    """One reading of a process's resources."""

    rss_bytes: int
    peak_rss_bytes: int  # VmHWM: the high-water mark since the process started
    open_fds: int
    threads: int

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / 2**20

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / 2**20


def _status_kib(fields: dict[str, str], key: str) -> int:
    value = fields.get(key, "0 kB").split()[0]
    return int(value) * 1024


def sample(pid: int) -> ProcessSample:
    """Read the process's resources now (raises FileNotFoundError once it has exited)."""
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return ProcessSample(
        rss_bytes=_status_kib(fields, "VmRSS"),
        peak_rss_bytes=_status_kib(fields, "VmHWM"),
        open_fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields.get("Threads", "0")),
    )


class Monitor:
    """Samples a process every `interval_s` on a thread until stopped; keeps the peak RSS it saw."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        import threading

        self.pid = pid
        self.interval_s = interval_s
        self.first = sample(pid)
        self.last = self.first
        self.peak_rss_bytes = self.first.rss_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procstats-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.last = sample(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return  # the process exited
            self.peak_rss_bytes = max(self.peak_rss_bytes, self.last.rss_bytes)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.last = sample(self.pid)
            self.peak_rss_bytes = max(self.peak_rss_bytes, self.last.rss_bytes)
        except (FileNotFoundError, ProcessLookupError):
            pass

    @property
    def growth_mib(self) -> float:
        """RSS now minus RSS when monitoring began."""
        return (self.last.rss_bytes - self.first.rss_bytes) / 2**20

    @property
    def peak_mib(self) -> float:
        return self.peak_rss_bytes / 2**20
