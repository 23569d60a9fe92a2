"""vLLM's scheduler stats, collected through a stat logger for EngineStats and the step listener.

vLLM hands every stat logger the scheduler's stats of each engine step (running and waiting
requests, KV cache use, prefix-cache tokens queried and hit in that step) on the event loop, in its
output handler. We keep the latest snapshot and add up the prefix-cache counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vllm.config import VllmConfig
from vllm.v1.metrics.loggers import StatLoggerBase

log = logging.getLogger(__name__)


class SchedulerView:
    """The latest scheduler snapshot and cumulative counters of one vLLM engine."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.steps = 0
        # The KV cache's geometry, known once the engine core has profiled memory (None before).
        self.block_size: int | None = None
        self.num_blocks: int | None = None
        self.step_listener: Callable[[int], None] | None = None

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is None:
            return
        self.running = int(scheduler_stats.num_running_reqs)
        self.waiting = int(scheduler_stats.num_waiting_reqs) + int(
            getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
        )
        self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        prefix = scheduler_stats.prefix_cache_stats
        if prefix is not None:
            self.prefix_cache_queries += int(prefix.queries)
            self.prefix_cache_hits += int(prefix.hits)
        if iteration_stats is not None:  # an engine step that produced tokens
            self.steps += 1
            listener = self.step_listener
            if listener is not None:
                try:
                    listener(self.running)
                except Exception:
                    log.exception("the step listener failed")


class _ViewLogger(StatLoggerBase):  # type: ignore[misc]  # vllm is untyped where mypy runs (.venv)
    """A vLLM stat logger that feeds a SchedulerView."""

    def __init__(self, view: SchedulerView, vllm_config: VllmConfig) -> None:
        self._view = view
        self._config = vllm_config

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        self._view.record(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        # Called once the engine core reported back: by then the front end's cache config holds the
        # block count the core sized from the memory profile (vLLM's own cache_config_info reads it here).
        cache = self._config.cache_config
        self._view.block_size = _positive(getattr(cache, "block_size", None))
        self._view.num_blocks = _positive(getattr(cache, "num_gpu_blocks", None))


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def logger_factory(view: SchedulerView) -> Callable[[VllmConfig, int], StatLoggerBase]:
    """What AsyncLLM's stat_loggers takes: a factory per engine index (one engine here)."""

    def build(vllm_config: VllmConfig, engine_index: int = 0) -> StatLoggerBase:
        return _ViewLogger(view, vllm_config)

    return build
