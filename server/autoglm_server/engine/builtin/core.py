"""The engine thread's side of the engine: one step is schedule -> forward -> sample -> emit.

The front end (asyncio thread) only calls `add` and `abort`; both touch the scheduler under `lock`,
so a cancelled request's reservation is returned at once, and its batch row is dropped at the next
step. Everything else here runs on the engine thread alone.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from autoglm_server.engine.builtin.detokenize import DetokenizerFactory
from autoglm_server.engine.builtin.kvcache import read_block
from autoglm_server.engine.builtin.outbox import Outbox
from autoglm_server.engine.builtin.prefill import prefill_groups
from autoglm_server.engine.builtin.prefix_cache import BlockKV, Hit, PrefixCache
from autoglm_server.engine.builtin.runner import KVBatch, ModelRunner
from autoglm_server.engine.builtin.sampling import RowSampling, sample
from autoglm_server.engine.builtin.scheduler import Limits, Scheduler, Ticket
from autoglm_server.engine.builtin.sequence import Sequence
from autoglm_server.engine.builtin.timers import StepTimers
from autoglm_server.engine.types import FinishReason, GenerationDelta, GenerationRequest, TokenLogprob, Usage
from autoglm_server.errors import (
    AutoglmError,
    DeadlineExceededError,
    OutOfMemoryError,
    OverloadedError,
    RequestTooLargeError,
)

log = logging.getLogger(__name__)

Output = tuple[str, GenerationDelta | AutoglmError]
Emit = Callable[[list[Output]], None]
StepListener = Callable[[int], None]


class EngineCore:
    """Scheduler, running sequences and their KV batch."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        eos_ids: tuple[int, ...],
        context: int,
        limits: Limits,
        stream_interval: float = 0.0,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.runner = runner
        self.prefix_cache = prefix_cache
        self.detokenizers = DetokenizerFactory(tokenizer)
        self.context = context
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.scheduler = Scheduler(limits)
        self.steps = 0
        self._eos = frozenset(eos_ids)
        self._pending: dict[str, GenerationRequest] = {}
        self._aborted: set[str] = set()
        # Requests cancelled while still waiting: they never reached a row, yet their streams must end.
        self._cancelled_waiting: list[GenerationRequest] = []
        self._rows: list[Sequence] = []
        self._batch: KVBatch | None = None
        self.step_listener: StepListener | None = None
        self.timers = StepTimers()
        self.outbox = Outbox(stream_interval)
        self._gathered = False  # some running row holds tokens not handed over yet
        self._next_deadline: float | None = None  # the earliest deadline of a running row

    @property
    def batch_rows(self) -> int:
        """Rows in the device batch now (a cancelled row stays until the next step)."""
        return len(self._rows)

    # ------------------------------------------------------- front-end calls
    def add(self, request: GenerationRequest) -> None:
        """Queue a request or raise RequestTooLargeError / OverloadedError."""
        prompt = len(request.prompt_token_ids)
        if prompt >= self.context:
            raise RequestTooLargeError(
                "prompt", f"{prompt} tokens leave no room to generate within the context of {self.context}"
            )
        ticket = Ticket(
            request_id=request.request_id,
            tenant=request.tenant,
            priority=request.priority,
            prompt_tokens=prompt,
            reserved_tokens=min(prompt + request.max_new_tokens, self.context),
            arrival=request.arrival_time,
            deadline=request.deadline,
        )
        with self.lock:
            self.scheduler.add(ticket)
            self._pending[request.request_id] = request
        self.wakeup.set()

    def abort(self, request_id: str) -> None:
        with self.lock:
            where = self.scheduler.cancel(request_id)
            if where == "waiting":
                request = self._pending.pop(request_id, None)
                if request is not None:
                    self._cancelled_waiting.append(request)
            elif where == "running":
                self._aborted.add(request_id)
        self.wakeup.set()

    # ------------------------------------------------------ engine-thread loop
    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Step until `stop` is set; sleeps while there is nothing to do."""
        while not stop.is_set():
            if self._idle():
                self.wakeup.wait(0.5)
                self.wakeup.clear()
                continue
            self.timers.start()
            outputs = self.step()
            self.timers.lap("schedule")
            if outputs:
                emit(outputs)
            self.timers.stop()

    def _idle(self) -> bool:
        with self.lock:
            return not self._rows and self.scheduler.waiting == 0 and not self._aborted and not self._cancelled_waiting

    def step(self) -> list[Output]:
        outputs: list[Output] = []
        now = time.monotonic()
        with self.lock:
            admission = self.scheduler.schedule(now)
            joining = [self._pending.pop(t.request_id) for t in admission.admitted]
            for ticket, _ in admission.expired:
                self._pending.pop(ticket.request_id, None)
            aborted, self._aborted = self._aborted, set()
            cancelled, self._cancelled_waiting = self._cancelled_waiting, []
            retry = self.scheduler.retry_after_s()
            if self.prefix_cache is not None:  # the admitted rows' reservations come first
                self.prefix_cache.evict_to(self._cache_room())
        for ticket, why in admission.expired:
            outputs.append((ticket.request_id, _expired_error(why, retry)))
        for request in cancelled:
            outputs.append((request.request_id, _cancelled_before_running(request, now)))
        self._drop(aborted, now, outputs)
        if joining:
            self._prefill(joining, now, outputs)
        elif self._rows:
            self._decode(outputs)
        if self._gathered and self.outbox.due(time.monotonic()):
            for row in self._rows:
                if row.pending:
                    outputs.append((row.request_id, row.take()))
            self._gathered = False
        return outputs

    def _drop(self, aborted: set[str], now: float, outputs: list[Output]) -> None:
        """Remove cancelled rows and rows past their deadline."""
        if not aborted and (self._next_deadline is None or self._next_deadline > now):
            return  # the common step: nothing to look at row by row
        keep: list[int] = []
        for i, row in enumerate(self._rows):
            deadline = row.request.deadline
            if row.request_id in aborted:
                outputs.append((row.request_id, row.close(row.take(), FinishReason.CANCELLED)))
            elif deadline is not None and deadline <= now:
                if row.pending:  # tokens produced before the failure still go out first
                    outputs.append((row.request_id, row.take()))
                outputs.append((row.request_id, DeadlineExceededError("the request's deadline passed")))
                with self.lock:
                    self.scheduler.finish(row.request_id)
            else:
                keep.append(i)
        self._keep(keep, outputs)

    def _keep(self, keep: list[int], outputs: list[Output]) -> None:
        if len(keep) == len(self._rows):
            return
        rows = [self._rows[i] for i in keep]
        try:
            batch = self.runner.select(self._batch, keep) if self._batch is not None else None
        except torch.OutOfMemoryError:
            # Some layers may already have dropped the leaving rows: the batch is not usable, and
            # the rows that stay in it fail as they would in a forward that ran out of memory.
            self._rows, self._batch = [], None
            self._out_of_memory(rows, outputs)
            return
        self._rows, self._batch = rows, batch
        self._rows_changed()

    def _rows_changed(self) -> None:
        deadlines = [row.request.deadline for row in self._rows if row.request.deadline is not None]
        self._next_deadline = min(deadlines, default=None)

    def _cache_room(self) -> int:
        """Tokens the prefix cache may hold now: the KV budget less the running rows' reservations
        (called under `lock`)."""
        return self.scheduler.limits.token_budget - self.scheduler.reserved_tokens

    def _prefill(self, joining: list[GenerationRequest], now: float, outputs: list[Output]) -> None:
        cache = self.prefix_cache
        hits = [cache.lookup(r.prompt_token_ids) if cache is not None else Hit() for r in joining]
        # Padding costs what the forward computes: the uncached rest of each prompt.
        lengths = [len(request.prompt_token_ids) - hit.tokens for request, hit in zip(joining, hits, strict=True)]
        for group in prefill_groups(lengths):
            rows = [self._sequence(joining[i], hits[i], now) for i in group]
            self._prefill_group(rows, [hits[i] for i in group], outputs)
        self._retire(outputs)

    def _sequence(self, request: GenerationRequest, hit: Hit, now: float) -> Sequence:
        sampling = RowSampling.create(
            request.sampling, request.prompt_token_ids, self.runner.device, request.logprobs, request.top_logprobs
        )
        return Sequence(
            request, self.detokenizers, self._eos, self.context, sampling, admitted_at=now, cached_tokens=hit.tokens
        )

    def _prefill_group(self, rows: list[Sequence], hits: list[Hit], outputs: list[Output]) -> None:
        timers = self.timers
        try:
            timers.forward_started()
            logits, kv = self.runner.prefill(
                [r.request.prompt_token_ids for r in rows], [r.request.images for r in rows], hits
            )
            timers.forward_ended()
            self._cache_prompts(rows, hits, kv)
            tokens, logprobs = sample(logits, [r.sampling for r in rows])
            self.runner.set_last_tokens(kv, tokens)
            timers.lap("sample")
            # A merge that runs out of memory leaves the running batch as it was: only the
            # joining rows fail, before any of their tokens went out.
            batch = self.runner.merge(self._batch, kv)
            timers.lap("schedule")  # batch bookkeeping
        except torch.OutOfMemoryError:
            self._out_of_memory(rows, outputs)
            return
        except AutoglmError as error:  # the input strategy refused the group's inputs (engine/builtin/inputs.py)
            refused = error
            self._fail(rows, lambda: copy.copy(refused), outputs)
            return
        self._stepped(len(rows))
        self._append(rows, tokens, logprobs, outputs)
        timers.lap("output")
        self._batch = batch
        self._rows.extend(rows)
        self._rows_changed()

    def _cache_prompts(self, rows: list[Sequence], hits: list[Hit], kv: KVBatch) -> None:
        """Keep the prefilled prompts' blocks in the prefix cache, within the room the budget leaves."""
        cache = self.prefix_cache
        if cache is None:
            return
        width = int(kv.mask.shape[1])  # every row's prompt ends at the last column
        block = cache.block_tokens
        try:
            for index, (row, hit) in enumerate(zip(rows, hits, strict=True)):
                prompt = row.request.prompt_token_ids
                first = width - len(prompt)  # the column of the prompt's token 0 (in the uncached part's frame)
                with self.lock:
                    room = self._cache_room()
                cache.store(prompt, hit.tokens, functools.partial(_read, kv, index, first, block), room)
        except torch.OutOfMemoryError:  # a block is inserted only whole: the cache stays consistent
            log.warning("out of memory copying prompts into the prefix cache; they are not cached")

    def _decode(self, outputs: list[Output]) -> None:
        assert self._batch is not None
        timers = self.timers
        try:
            timers.forward_started()
            logits = self.runner.decode(self._batch)
            timers.forward_ended()
            tokens, logprobs = sample(logits, [r.sampling for r in self._rows])
            self.runner.set_last_tokens(self._batch, tokens)
            timers.lap("sample")
        except torch.OutOfMemoryError:
            rows, self._rows, self._batch = self._rows, [], None
            self._out_of_memory(rows, outputs)
            return
        self._stepped(len(self._rows))
        self._append(self._rows, tokens, logprobs, outputs)
        timers.lap("output")
        self._retire(outputs)

    def _stepped(self, batch_size: int) -> None:
        self.steps += 1
        if self.step_listener is not None:
            try:
                self.step_listener(batch_size)
            except Exception:  # a metrics hook must not take the engine down
                log.exception("the step listener failed")

    def _append(
        self, rows: list[Sequence], tokens: list[int], logprobs: list[TokenLogprob | None], outputs: list[Output]
    ) -> None:
        now = time.monotonic()
        for row, token, logprob in zip(rows, tokens, logprobs, strict=True):
            first = row.first_token_at is None
            last = row.append(token, logprob, now)
            if last is not None:
                outputs.append((row.request_id, last))
            elif first:  # time to first token is never delayed: this delta goes now, alone
                outputs.append((row.request_id, row.take()))
        self._gathered = True

    def _retire(self, outputs: list[Output]) -> None:
        """Drop finished rows at once and return their reservations."""
        finished = [r for r in self._rows if r.finish_reason is not None]
        if not finished:
            return
        with self.lock:
            for row in finished:
                self.scheduler.finish(row.request_id, row.service_time_s())
        self._keep([i for i, r in enumerate(self._rows) if r.finish_reason is None], outputs)

    def _fail(self, rows: list[Sequence], error: Callable[[], AutoglmError], outputs: list[Output]) -> None:
        """Fail these rows' requests (one error each: each is raised in its own stream) and free their rows."""
        with self.lock:
            for row in rows:
                self.scheduler.finish(row.request_id)
        for row in rows:
            if row.pending:  # tokens produced before the failure still go out first
                outputs.append((row.request_id, row.take()))
            outputs.append((row.request_id, error()))

    def _out_of_memory(self, rows: list[Sequence], outputs: list[Output]) -> None:
        """Fail the step's requests, free what the step held, and carry on."""
        log.warning("out of memory in an engine step; failing its %d requests", len(rows))
        self._fail(rows, lambda: OutOfMemoryError("the batch ran out of device memory; retry"), outputs)
        if self.runner.device.type == "cuda":
            torch.cuda.empty_cache()

    def warm_up(self) -> None:
        """One prefill and one decode, so the first request does not pay for lazy initialisation."""
        _, kv = self.runner.prefill([[0, 1, 2, 3]])
        self.runner.decode(kv)


def _read(kv: KVBatch, row: int, first: int, block: int, start: int) -> BlockKV:
    """The block of `row`'s prompt from token `start`, its token 0 being at column `first`."""
    return read_block(kv.cache, row, first + start, block)


def _cancelled_before_running(request: GenerationRequest, now: float) -> GenerationDelta:
    usage = Usage(
        prompt_tokens=len(request.prompt_token_ids),
        completion_tokens=0,
        queue_time_s=max(0.0, now - request.arrival_time),
        time_to_first_token_s=None,
    )
    return GenerationDelta(finish_reason=FinishReason.CANCELLED, usage=usage)


def _expired_error(why: str, retry_after_s: float) -> AutoglmError:
    if why == "deadline":
        return DeadlineExceededError("the request's deadline passed while it waited for a batch row")
    return OverloadedError(
        "the request waited longer than --max-queue-time for a batch row",
        reason="queue_time",
        retry_after_s=retry_after_s,
    )
