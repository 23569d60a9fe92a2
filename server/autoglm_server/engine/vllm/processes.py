"""The processes and files a vLLM engine leaves behind, and making sure it leaves none.

vLLM spawns its engine core (and, under it, model workers) with multiprocessing; shutdown asks them
to stop, and whatever is still there after the timeout is killed here, so that a daemon that shut
its engine down has no child left. A builtin:* model (random weights, built in code) is saved to a
temporary directory for vLLM to load, and removed at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.resource_tracker
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def children() -> set[int]:
    """Pids of this process's descendants now."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def named(pids: list[int], prefix: str) -> list[int]:
    """The pids among `pids` whose process name starts with prefix."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            # vLLM retitles its processes (setproctitle): the title is the command line, not the name.
            if " ".join(psutil.Process(pid).cmdline()).startswith(prefix):
                found.append(pid)
    return found


def reap(pids: list[int], timeout_s: float) -> None:
    """Wait for the given processes to exit; terminate, then kill, those that do not in time."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    if alive:
        log.warning("vLLM processes still running after shutdown: %s; terminating", [p.pid for p in alive])
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(alive, timeout=5.0)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5.0)


def stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker (started for vLLM's shared memory), if it runs.

    It would otherwise live on as a child of the daemon until the daemon exits. `_stop` is private
    to the standard library (3.11+); when it is missing the tracker simply lives until exit.
    """
    tracker = getattr(multiprocessing.resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)
    if callable(stop):
        with contextlib.suppress(Exception):
            stop()


@dataclass
class ModelDir:
    """Where vLLM loads the model from."""

    path: str
    builtin: bool = False

    @classmethod
    def for_model(cls, model: str) -> ModelDir:
        from autoglm_server.engine import builtin_models

        if model not in builtin_models.BUILTIN_MODELS:
            return cls(model)
        started = time.monotonic()
        directory = Path(tempfile.mkdtemp(prefix="autoglm-vllm-builtin-"))
        builtin_models.save(model, directory)
        log.info("saved %s for vLLM in %.1f s", model, time.monotonic() - started)
        return cls(str(directory), builtin=True)

    def cleanup(self) -> None:
        if self.builtin:
            shutil.rmtree(self.path, ignore_errors=True)
