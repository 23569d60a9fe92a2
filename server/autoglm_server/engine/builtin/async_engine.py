"""The asyncio front end of the continuous-batching engine.

One engine thread (EngineCore.run) steps the batch and hands new deltas to the event loop with a
single `call_soon_threadsafe` for all requests, gathered over up to `--stream-interval`
(engine/builtin/outbox.py). Each request has a mailbox that holds at most one pending delta: a slow
consumer gets later deltas merged into it, so it never blocks the batch.

A hand-off made while the loop has not yet taken the previous one joins it instead of waking the
loop again, and the wake-up itself is made by a thread of its own (engine/builtin/waker.py): the
write to the loop's self-pipe releases the interpreter lock, and the engine thread would wait out
the loop's whole turn (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from autoglm_server.engine import builtin_models, gpu_memory
from autoglm_server.engine.builtin import loader, memory
from autoglm_server.engine.builtin.core import EngineCore, Output
from autoglm_server.engine.builtin.inputs import Glm4vInputs, InputStrategy, TextInputs
from autoglm_server.engine.builtin.prefix_cache import PrefixCache
from autoglm_server.engine.builtin.runner import FaultInjector, ModelRunner
from autoglm_server.engine.builtin.scheduler import Limits
from autoglm_server.engine.builtin.waker import LoopWaker
from autoglm_server.engine.chat_template import BUILTIN_CHAT_TEMPLATE, ChatRenderer, read_template_file
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import (
    ChatMessage,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    ModelDescription,
    RenderedPrompt,
)
from autoglm_server.engine.vision_chat import VisionChatRenderer, mm_processor_kwargs
from autoglm_server.errors import AutoglmError, EngineFailedError, InvalidRequestError, UnavailableError

log = logging.getLogger(__name__)


class _Mailbox:
    """Where the engine leaves a request's deltas (or its error) for the consumer."""

    __slots__ = ("error", "event", "pending")

    def __init__(self) -> None:
        self.pending: GenerationDelta | None = None
        self.error: AutoglmError | None = None
        self.event = asyncio.Event()

    def put(self, item: GenerationDelta | AutoglmError) -> None:
        if isinstance(item, AutoglmError):
            self.error = item
        elif self.pending is None:
            self.pending = item
        else:
            self.pending.merge(item)
        self.event.set()

    async def get(self) -> GenerationDelta:
        while self.pending is None and self.error is None:
            self.event.clear()
            await self.event.wait()
        if self.pending is not None:  # deltas produced before a failure still go out first
            delta, self.pending = self.pending, None
            return delta
        assert self.error is not None
        raise self.error


class RequestStream:
    """The async iterator of one request's deltas; closing or dropping it early aborts the request.

    A class rather than an async generator: a generator closed before its first iteration never runs
    its `finally`, and the abort would be lost.
    """

    def __init__(self, engine: AsyncEngine, request_id: str, key: str, mailbox: _Mailbox) -> None:
        self._engine = engine
        self._request_id = request_id
        self._key = key
        self._mailbox = mailbox
        self._finished = False
        self._closed = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> GenerationDelta:
        if self._finished or self._closed:
            raise StopAsyncIteration
        try:
            delta = await self._mailbox.get()
        except BaseException:  # failed in the engine, or the consumer was cancelled while waiting
            self._close()
            raise
        if delta.finished:
            self._finished = True
            self._close()
        return delta

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine._release(self._request_id, self._key, abort=not self._finished)

    def __del__(self) -> None:
        # A stream dropped without being closed may be finalized by the garbage collector on any
        # thread, the engine thread too (possibly inside core.lock): hand the release to the loop,
        # the only thread that owns the mailboxes.
        if self._closed:
            return
        loop = self._engine._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close)


class AsyncEngine:
    """Implements the Engine protocol (engine/protocol.py) with continuous batching."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        loaded: loader.LoadedModel | None = None,
        fault_injector: FaultInjector | None = None,
    ) -> None:
        self._settings = settings
        self._loaded = loaded
        self._fault_injector = fault_injector
        self._core: EngineCore | None = None
        self._front_tokenizer: Any = None
        self._renderer: ChatRenderer | VisionChatRenderer | None = None
        self._image_token_id: int | None = None  # a vision model's image placeholder
        # Mailboxes by engine key. The core knows each submission by a key of its own, never by the
        # caller's request_id: a request_id reused right after a cancel must not receive the old
        # request's late deltas (or its CANCELLED end).
        self._mailboxes: dict[str, _Mailbox] = {}
        self._keys: dict[str, str] = {}  # request_id of an open stream -> its engine key
        self._serial = itertools.count()
        self._listeners: list[Callable[[BaseException], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._alive = False
        self._budget = 0
        self._description: ModelDescription | None = None
        # Hand-offs the loop has not taken yet, and whether a wake-up to take them is on its way.
        self._handoffs: deque[list[Output]] = deque()
        self._wake_pending = False
        self._waker: LoopWaker | None = None
        self._step_listener: Callable[[int], None] | None = None
        self._gpu_checks: tuple[gpu_memory.HeadroomCheck, ...] = ()

    # --------------------------------------------------------------- startup
    @property
    def model(self) -> ModelDescription:
        if self._description is None:
            raise UnavailableError("the engine has not started")
        return self._description

    @property
    def runner(self) -> ModelRunner:
        """The model runner (tests set its fault injector)."""
        if self._core is None:
            raise UnavailableError("the engine has not started")
        return self._core.runner

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waker = LoopWaker(self._loop, self._deliver)
        ready: asyncio.Future[EngineCore] = self._loop.create_future()
        # The engine thread loads the model, warms it up and steps it: it is the only thread that
        # runs torch. Each thread that runs a parallel operator gets its own OpenMP team, and with
        # more team threads than CPUs libgomp cuts every worker's spin to ~100 iterations, so each
        # of the ~150 parallel regions of a decode step waits for a sleeping worker (measured in
        # docs/benchmarks.md and scripts/openmp_teams.py: a 1x768 matmul 84 us with one team, 198 with two).
        self._thread = threading.Thread(target=self._run, args=(ready,), name="autoglm-engine", daemon=True)
        self._thread.start()
        try:
            core = await ready
        except BaseException:
            self._waker.close()  # no engine thread will hand anything over
            self._waker = None
            raise
        assert self._loaded is not None
        self._front_tokenizer = copy.deepcopy(self._loaded.tokenizer)
        if self._loaded.image_processor is not None:
            self._image_token_id = int(self._loaded.model.config.image_token_id)
        self._renderer = self._chat_renderer(self._loaded)
        assert self._description is not None
        images = self._images_per_request() if self._loaded.image_processor is not None else 0
        self._description = replace(
            self._description,
            has_chat_template=self._renderer.available,
            supports_images=images > 0,
            max_images_per_request=images,
        )
        self._core = core
        self._alive = True
        log.info("engine ready: %s (%s on %s)", self.model.model_id, self.model.dtype, self.model.device)

    def _load(self) -> EngineCore:
        """On the engine thread: load the model (unless given), pick the threads, build the core."""
        if self._settings.torch_threads:
            torch.set_num_threads(self._settings.torch_threads)
        before = None  # the GPU's memory before the model lands on it (CUDA only)
        if self._loaded is None:
            device = loader.resolve_device(self._settings.device)
            before = memory.device_memory(device) if device.type == "cuda" else None
            try:
                self._loaded = loader.load(self._settings)
            except torch.OutOfMemoryError as exc:
                if before is None:
                    raise
                raise memory.weights_do_not_fit(before, self._settings.gpu_memory_fraction, exc) from None
        threads = loader.resolve_torch_threads(
            self._settings.torch_threads, self._loaded.model, next(self._loaded.model.parameters()).device
        )
        torch.set_num_threads(threads)
        log.info(
            "torch intra-op threads: %d (--torch-threads %s, %d usable CPUs)",
            threads,
            self._settings.torch_threads or "0: auto",
            loader.usable_cpus(),
        )
        return self._build_core(self._loaded, before)

    def _build_core(self, loaded: loader.LoadedModel, before: gpu_memory.DeviceMemory | None) -> EngineCore:
        settings = self._settings
        runner = ModelRunner(loaded.model, inputs=self._input_strategy(loaded))
        memory.apply_memory_fraction(settings, runner.device)
        context = settings.max_context_length or loaded.description.max_context_length
        self._description = replace(loaded.description, max_context_length=context)
        limits = Limits(
            max_running=settings.max_running,
            max_waiting=settings.max_waiting,
            token_budget=1 << 62,
            max_queue_time_s=settings.max_queue_time,
            max_waiting_per_tenant=settings.max_waiting_per_tenant,
            max_running_per_tenant=settings.max_running_per_tenant,
            max_prefill_tokens=settings.max_prefill_tokens,
        )
        # The reusable prefix stops at a vision model's image placeholder (engine/builtin/prefix_cache.py).
        stop = int(loaded.model.config.image_token_id) if loaded.image_processor is not None else None
        core = EngineCore(
            runner,
            loaded.tokenizer,
            loaded.description.eos_token_ids,
            context,
            limits,
            settings.stream_interval,
            PrefixCache(stop) if settings.enable_prefix_caching else None,
        )
        core.warm_up()
        # Sized after the warm-up, so that free memory already accounts for the model's workspace.
        self._budget = memory.token_budget(settings, loaded.model, runner.device, context)
        core.scheduler.limits = replace(limits, token_budget=self._budget)
        if before is not None:  # refuse now rather than run out of memory under load
            self._gpu_checks = (memory.check_headroom(settings, before, loaded.model, runner.device, self._budget),)
        runner.fault_injector = self._fault_injector
        core.step_listener = self._step_listener  # after the warm-up, which is not served work
        return core

    def _input_strategy(self, loaded: loader.LoadedModel) -> InputStrategy:
        """How prefill inputs are built for this model family (engine/builtin/inputs.py)."""
        if loaded.image_processor is None:
            return TextInputs()
        # The loader admits only VISION_ARCHITECTURES, today GLM-4.1V alone.
        return Glm4vInputs(loaded.model, loaded.image_processor, self._processor_kwargs())

    def _processor_kwargs(self) -> dict[str, Any]:
        """--mm-processor-kwargs (a setting of config.Settings shared with the vLLM engine)."""
        return mm_processor_kwargs(str(getattr(self._settings, "mm_processor_kwargs", "")))

    def _images_per_request(self) -> int:
        """--limit-images-per-request (serving/images/settings.py), 10 where the setting is absent."""
        return int(getattr(self._settings, "limit_images_per_request", 10))

    def _chat_renderer(self, loaded: loader.LoadedModel) -> ChatRenderer | VisionChatRenderer:
        template = self._chat_template()
        if loaded.image_processor is None:
            return ChatRenderer(self._front_tokenizer, template)
        return VisionChatRenderer(
            self._front_tokenizer,
            copy.deepcopy(loaded.image_processor),  # the engine thread has its own
            self._front_tokenizer.convert_ids_to_tokens(self._image_token_id),
            template,
            self._images_per_request(),
            self._processor_kwargs(),
            features_dtype=loaded.model.dtype,  # the image processor runs in the rendering worker thread
        )

    # ------------------------------------------------------------ the thread
    def _run(self, ready: asyncio.Future[EngineCore]) -> None:
        assert self._loop is not None
        try:
            core = self._load()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed: start() is gone
                self._loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, ready, core, None)
        try:
            core.run(self._emit, self._stop)
        except BaseException as exc:
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        log.critical("the engine loop died", exc_info=exc)
        self._alive = False
        error = EngineFailedError("the engine failed; the daemon is restarting")
        # Listeners first: the daemon turns health NOT_SERVING before any stream learns of the
        # failure, so a client that sees the error never finds the server still reporting SERVING.
        for listener in list(self._listeners):
            try:
                listener(exc)
            except Exception:
                log.exception("a fatal-error listener failed")
        if self._loop is not None and not self._loop.is_closed():
            # The loop may close meanwhile: then nobody is waiting.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._fail_all, error)

    def _emit(self, outputs: list[Output]) -> None:
        """On the engine thread: hand a step's outputs to the loop, waking it only if it is not already due."""
        assert self._waker is not None
        # Append first, then look at the flag: the loop clears the flag before it takes, so a hand-off
        # that finds the flag set is taken by the drain on its way.
        self._handoffs.append(outputs)
        if not self._wake_pending:
            self._wake_pending = True
            self._waker.wake()

    def _deliver(self) -> None:
        """On the loop: put every pending hand-off's outputs into their mailboxes, in order."""
        started = time.perf_counter()
        self._wake_pending = False
        handoffs, mailboxes = self._handoffs, self._mailboxes
        while handoffs:
            for request_id, item in handoffs.popleft():
                mailbox = mailboxes.get(request_id)
                if mailbox is not None:
                    mailbox.put(item)
        if self._core is not None:
            self._core.timers.deliver += time.perf_counter() - started

    def _release(self, request_id: str, key: str, abort: bool) -> None:
        self._mailboxes.pop(key, None)
        if self._keys.get(request_id) == key:
            del self._keys[request_id]
        if abort and self._core is not None:
            self._core.abort(key)

    def _fail_all(self, error: AutoglmError) -> None:
        for mailbox in self._mailboxes.values():
            mailbox.put(error)

    # -------------------------------------------------------------- protocol
    async def submit(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        core = self._core
        if core is None:
            raise UnavailableError("the engine is not running")
        if not self._alive:
            raise EngineFailedError("the engine failed; the daemon is restarting")
        request_id = request.request_id
        if request_id in self._keys:
            raise InvalidRequestError("request_id", f"{request_id!r} is already in use by a running request")
        self._check_placeholders(request)
        key = f"{request_id}#{next(self._serial)}"
        mailbox = _Mailbox()
        self._mailboxes[key] = mailbox
        self._keys[request_id] = key
        try:
            core.add(replace(request, request_id=key))
        except BaseException:
            del self._mailboxes[key]
            del self._keys[request_id]
            raise
        return RequestStream(self, request_id, key, mailbox)

    def _check_placeholders(self, request: GenerationRequest) -> None:
        """A vision model's image token stands for an image's features: a prompt of token ids may not
        hold it without the image behind it (chat requests get it from the renderer, counted)."""
        if self._image_token_id is None or request.images:
            return
        if self._image_token_id in request.prompt_token_ids:
            raise InvalidRequestError(
                "prompt", f"token id {self._image_token_id} is the image placeholder; send images in chat messages"
            )

    def abort(self, request_id: str) -> None:
        key = self._keys.get(request_id)
        if key is not None and self._core is not None:
            self._core.abort(key)

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        if self._front_tokenizer is None:
            raise UnavailableError("the engine has not started")
        ids: list[int] = self._front_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return ids

    def _chat_template(self) -> str | None:
        """The operator's --chat-template, else the built-in models' own, else the model's (None)."""
        path = self._settings.chat_template
        if path:
            return read_template_file(path)
        if self._settings.model in builtin_models.BUILTIN_LLAMAS:
            return BUILTIN_CHAT_TEMPLATE
        return None  # builtin:glm4v-tiny's tokenizer carries GLM's template

    def render_chat(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        if self._renderer is None:
            raise UnavailableError("the engine has not started")
        return self._renderer.render(messages, self.model.model_id)

    def stats(self) -> EngineStats:
        core = self._core
        if core is None:
            return EngineStats(0, 0, 0, 0, 0, alive=False)
        cache = core.prefix_cache
        with core.lock:
            scheduler = core.scheduler
            return EngineStats(
                running=scheduler.running,
                waiting=scheduler.waiting,
                reserved_tokens=scheduler.reserved_tokens,
                token_budget=scheduler.limits.token_budget,
                steps=core.steps,
                alive=self._alive,
                gpu_memory=self._gpu_checks,
                phase_seconds=core.timers.snapshot(),
                timed_steps=core.timers.steps,
                prefix_cache_queries=None if cache is None else cache.queries,
                prefix_cache_hits=None if cache is None else cache.hits,
                prefix_cache_tokens=None if cache is None else cache.tokens,
            )

    def add_fatal_listener(self, listener: Callable[[BaseException], None]) -> None:
        self._listeners.append(listener)

    def set_step_listener(self, listener: Callable[[int], None]) -> None:
        self._step_listener = listener
        if self._core is not None:
            self._core.step_listener = listener

    async def shutdown(self) -> None:
        self._stop.set()
        if self._core is not None:
            self._core.wakeup.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        self._alive = False
        self._fail_all(UnavailableError("the engine shut down"))
        self._core = None
        self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _settle(future: asyncio.Future[EngineCore], core: EngineCore | None, error: BaseException | None) -> None:
    """Complete start()'s future on the loop, unless start() was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert core is not None
        future.set_result(core)


def create_engine(settings: EngineSettings) -> AsyncEngine:
    """The engine the daemon serves with."""
    return AsyncEngine(settings)
