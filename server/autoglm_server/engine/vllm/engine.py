"""The Engine protocol (engine/protocol.py) over vLLM's in-process async engine, AsyncLLM.

AsyncLLM runs vLLM's engine core (scheduler, KV cache, model workers) in spawned processes and
streams each request's outputs back over ZMQ to an output handler task on this event loop. What the
daemon adds in front: its own admission (admission.py), per-submission keys so that a request_id
reused after a cancel never sees the old request's output, deadlines, and the fatal-error signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.chat_template import BUILTIN_CHAT_TEMPLATE, ChatRenderer, read_template_file
from autoglm_server.engine.types import (
    ChatMessage,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    ModelDescription,
    RenderedPrompt,
)
from autoglm_server.engine.vllm import args as vllm_args
from autoglm_server.engine.vllm import gpu_probe, processes
from autoglm_server.engine.vllm.admission import Admission, AdmissionLimits
from autoglm_server.engine.vllm.outputs import OutputState, sampling_params
from autoglm_server.engine.vllm.stats import SchedulerView, logger_factory
from autoglm_server.engine.vllm.stream import VllmRequestStream
from autoglm_server.errors import (
    EngineFailedError,
    InvalidRequestError,
    RequestTooLargeError,
    StartupError,
    UnavailableError,
)

log = logging.getLogger(__name__)

_MONITOR_INTERVAL_S = 0.2
_SHUTDOWN_TIMEOUT_S = 20.0


class VllmEngine:
    """Implements the Engine protocol with vLLM."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._llm: Any = None
        self._model_dir: processes.ModelDir | None = None
        self._description: ModelDescription | None = None
        self._renderer: Any = None
        self._tokenizer: Any = None
        self._view = SchedulerView()
        self._admission = Admission(
            AdmissionLimits(
                max_running=settings.max_running,
                max_waiting=settings.max_waiting,
                max_running_per_tenant=settings.max_running_per_tenant,
                max_waiting_per_tenant=settings.max_waiting_per_tenant,
            )
        )
        self._keys: dict[str, str] = {}  # request_id of an open stream -> its vLLM request id
        self._serial = itertools.count()
        self._listeners: list[Callable[[BaseException], None]] = []
        self._monitor: asyncio.Task[None] | None = None
        self._children: list[int] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failed = False
        self._gpu_checks: tuple[gpu_memory.HeadroomCheck, ...] = ()

    # --------------------------------------------------------------- startup
    @property
    def model(self) -> ModelDescription:
        if self._description is None:
            raise UnavailableError("the engine has not started")
        return self._description

    @property
    def llm(self) -> Any:
        """vLLM's AsyncLLM (tests look at its output processor)."""
        return self._llm

    @property
    def child_pids(self) -> list[int]:
        """The processes vLLM started for this engine (engine core, workers)."""
        return list(self._children)

    def child_pids_named(self, prefix: str) -> list[int]:
        """The engine's processes whose name starts with prefix (vLLM names them VLLM::EngineCore, ...)."""
        return processes.named(self._children, prefix)

    async def start(self) -> None:
        from vllm.platforms import current_platform

        self.loop = asyncio.get_running_loop()
        vllm_args.check_device(
            getattr(self._settings, "device", "auto"), current_platform.is_cuda_alike(), current_platform.device_type
        )
        self._model_dir = await asyncio.to_thread(processes.ModelDir.for_model, self._settings.model)
        engine_args = self._engine_args(self._model_dir.path)
        # Before vLLM spawns anything: refuse with a clear message instead of its workers' late failure.
        self._gpu_checks = await asyncio.to_thread(self._check_gpu_memory, self._model_dir.path)
        before = processes.children()
        self._llm = await asyncio.to_thread(self._build, engine_args)
        self._children = sorted(processes.children() - before)
        try:
            await asyncio.to_thread(self._describe)
            self._monitor = asyncio.create_task(self._watch(), name="autoglm-vllm-monitor")
            await self._warm_up()
        except BaseException:
            await self.shutdown()
            raise
        log.info("vllm engine ready: %s (%s on %s)", self.model.model_id, self.model.dtype, self.model.device)

    def _check_gpu_memory(self, model_path: str) -> tuple[gpu_memory.HeadroomCheck, ...]:
        """Report each GPU's total and free memory and vLLM's share of it; raise GpuMemoryError when it cannot fit."""
        devices = gpu_probe.read_devices(self._settings.tensor_parallel_size)
        if not devices:
            return ()
        fraction = self._settings.gpu_memory_fraction
        checks = gpu_memory.vllm_reservations(devices, fraction, gpu_probe.checkpoint_bytes(model_path))
        for verdict in checks:
            (log.info if verdict.fits else log.error)("%s", verdict.report())
        return gpu_memory.require_fit(checks, "vLLM")

    def _engine_args(self, model_path: str) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        kwargs = vllm_args.engine_arg_dict(self._settings, model_path)
        known = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
        vllm_args.check_known(vllm_args.parse_vllm_args(self._settings.vllm_arg), known)
        try:
            return AsyncEngineArgs(**kwargs)
        except (TypeError, ValueError) as exc:
            raise StartupError(f"vLLM refused the engine arguments: {exc}") from None

    def _build(self, engine_args: Any) -> Any:
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            return AsyncLLM.from_engine_args(
                engine_args, usage_context=UsageContext.ENGINE_CONTEXT, stat_loggers=[logger_factory(self._view)]
            )
        except Exception as exc:
            raise StartupError(f"vLLM could not start the engine: {exc}") from exc

    def _describe(self) -> None:
        from vllm.platforms import current_platform

        llm = self._llm
        config = llm.model_config
        hf_config = config.hf_config
        tokenizer = llm.get_tokenizer()
        self._tokenizer = tokenizer
        eos = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        for source in (
            getattr(hf_config, "eos_token_id", None),
            getattr(config.get_hf_config_text(), "eos_token_id", None)
            if hasattr(config, "get_hf_config_text")
            else None,
        ):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, list):
                eos.update(int(x) for x in source)
        eos.update(int(x) for x in (getattr(config, "generation_config_eos", None) or []))
        multimodal = bool(config.is_multimodal_model)
        images = vllm_args.images_per_request(self._settings) if multimodal else 0
        self._renderer = self._chat_renderer(tokenizer, multimodal, images)
        self._description = ModelDescription(
            model_id=self._settings.model,
            revision=self._settings.revision or "",
            architecture=(getattr(hf_config, "architectures", None) or [type(hf_config).__name__])[0],
            max_context_length=int(config.max_model_len),
            vocab_size=int(config.get_vocab_size()),
            eos_token_ids=tuple(sorted(eos)),
            dtype=str(config.dtype).removeprefix("torch."),
            device=str(current_platform.device_type),
            random_weights=self._model_dir is not None and self._model_dir.builtin,
            has_chat_template=self._renderer.available,
            supports_images=multimodal and images > 0,
            max_images_per_request=images,
        )

    def _chat_renderer(self, tokenizer: Any, multimodal: bool, images: int) -> Any:
        template: str | None = None
        if self._settings.chat_template:
            template = read_template_file(self._settings.chat_template)
        elif self._model_dir is not None and self._model_dir.builtin and not multimodal:
            template = BUILTIN_CHAT_TEMPLATE  # builtin:glm4v-tiny carries GLM's own in its tokenizer
        if not multimodal:
            return ChatRenderer(tokenizer, template)
        from transformers import AutoProcessor

        from autoglm_server.engine.vision_chat import VisionChatRenderer

        assert self._model_dir is not None
        processor = AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            self._model_dir.path, revision=self._settings.revision or None
        )
        kwargs = vllm_args.mm_processor_kwargs(self._settings.mm_processor_kwargs)
        template = template or getattr(processor, "chat_template", None)
        image_processor = getattr(processor, "image_processor", None)
        image_token = getattr(processor, "image_token", None)
        return VisionChatRenderer(tokenizer, image_processor, image_token, template, images, kwargs)

    async def _warm_up(self) -> None:
        """One short greedy request through the whole path, so the first client pays no lazy set-up."""
        from autoglm_server.engine.types import SamplingOptions

        ids = tuple(self._tokenizer.encode("warm up", add_special_tokens=False)) or (0,)
        request = GenerationRequest(
            request_id="autoglm-warm-up",
            prompt_token_ids=ids,
            max_new_tokens=2,
            sampling=SamplingOptions(),
            ignore_eos=True,
        )
        stream = await self.submit(request)
        async for _ in stream:
            pass
        self._view.steps = 0

    # ------------------------------------------------------- engine failure
    async def _watch(self) -> None:
        """Notice the engine core's death (vLLM's own monitor flags it) and tell the listeners."""
        while True:
            await asyncio.sleep(_MONITOR_INTERVAL_S)
            llm = self._llm
            if llm is None:
                return
            if llm.errored:
                self._die(llm.dead_error)
                return

    def _die(self, exc: BaseException) -> None:
        if self.failed:
            return
        log.critical("the vllm engine died", exc_info=exc)
        self.failed = True
        for listener in list(self._listeners):
            try:
                listener(exc)
            except Exception:
                log.exception("a fatal-error listener failed")

    # -------------------------------------------------------------- protocol
    async def submit(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        llm = self._llm
        if llm is None or self._description is None:
            raise UnavailableError("the engine is not running")
        if self.failed or llm.errored:
            raise EngineFailedError("the engine failed; the daemon is restarting")
        request_id = request.request_id
        if request_id in self._keys:
            raise InvalidRequestError("request_id", f"{request_id!r} is already in use by a running request")
        context = int(llm.model_config.max_model_len)
        prompt = len(request.prompt_token_ids)
        if prompt >= context:
            raise RequestTooLargeError(
                "prompt", f"{prompt} tokens leave no room to generate within the context of {context}"
            )
        if request.images and not (self._description is not None and self._description.supports_images):
            raise InvalidRequestError("messages", f"model {self._settings.model} takes no images; send text only")
        max_tokens = min(request.max_new_tokens, context - prompt)
        self._admission.admit(request.tenant)
        key = f"{request_id}#{next(self._serial)}"
        self._keys[request_id] = key
        state = OutputState(
            request=request,
            eos_token_ids=frozenset(self._description.eos_token_ids if self._description else ()),
            context_clamped=max_tokens < request.max_new_tokens,
            prompt_tokens=prompt,
        )
        try:
            collector = await self._add(llm, key, request, max_tokens)
        except BaseException:
            self.release(request_id, key, request.tenant, abort=False, service_time_s=None)
            raise
        return VllmRequestStream(self, request_id, key, collector, state)

    async def _add(self, llm: Any, key: str, request: GenerationRequest, max_tokens: int) -> Any:
        """Hand the request to vLLM. A cancel landing meanwhile aborts it once vLLM has it.

        vLLM's add_request awaits between registering the request and sending it to the engine core
        (vLLM issue #57061: a cancel there could leave the request's state behind). Shielding the
        call and aborting when it completes means the request is either never added or aborted.
        """
        prompt: dict[str, Any]
        tokenization: dict[str, Any] | None = None
        if request.images:
            prompt = {
                "prompt": request.prompt_text,
                "multi_modal_data": {"image": [image.image for image in request.images]},
                "multi_modal_uuids": {"image": [image.digest for image in request.images]},
            }
            tokenization = {"add_special_tokens": False}
        else:
            prompt = {"prompt_token_ids": list(request.prompt_token_ids)}
        task = asyncio.ensure_future(
            llm.add_request(
                key,
                prompt,
                sampling_params(request, max_tokens),
                tokenization_kwargs=tokenization,
                priority=-request.priority,  # vLLM serves lower values first; the daemon's API higher first
            )
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda _: self._abort_in_vllm(key))
            raise
        except Exception as exc:
            raise _request_error(exc) from exc

    def release(self, request_id: str, key: str, tenant: str, abort: bool, service_time_s: float | None) -> None:
        if self._keys.get(request_id) == key:
            del self._keys[request_id]
        self._admission.release(tenant, service_time_s)
        if abort:
            self._abort_in_vllm(key)

    def _abort_in_vllm(self, key: str) -> None:
        llm = self._llm
        if llm is None or self.loop is None or self.loop.is_closed():
            return
        task = self.loop.create_task(llm.abort(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def abort(self, request_id: str) -> None:
        key = self._keys.get(request_id)
        if key is not None:
            self._abort_in_vllm(key)  # vLLM ends the stream with an abort output: CANCELLED

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        if self._tokenizer is None:
            raise UnavailableError("the engine has not started")
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def render_chat(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        if self._renderer is None:
            raise UnavailableError("the engine has not started")
        rendered: RenderedPrompt = self._renderer.render(messages, self.model.model_id)
        return rendered

    def stats(self) -> EngineStats:
        llm = self._llm
        if llm is None:
            return EngineStats(0, 0, 0, 0, 0, alive=False)
        view = self._view
        # The scheduler reports with each engine step; an abort that empties it takes no step, so its
        # last report may still count the aborted requests. vLLM's front end knows nothing is left.
        idle = llm.output_processor.get_num_unfinished_requests() == 0
        return EngineStats(
            running=0 if idle else view.running,
            waiting=0 if idle else view.waiting,
            reserved_tokens=0,
            token_budget=0,
            steps=view.steps,
            alive=not (self.failed or llm.errored),
            kv_cache_usage=0.0 if idle and not self._settings.enable_prefix_caching else view.kv_cache_usage,
            prefix_cache_queries=view.prefix_cache_queries,
            prefix_cache_hits=view.prefix_cache_hits,
            gpu_memory=self._gpu_checks,
            kv_block_size=view.block_size,
            kv_num_blocks=view.num_blocks,
        )

    def add_fatal_listener(self, listener: Callable[[BaseException], None]) -> None:
        self._listeners.append(listener)

    def set_step_listener(self, listener: Callable[[int], None]) -> None:
        """Called on the event loop (vLLM's output handler) with the running requests of each step."""
        self._view.step_listener = listener

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if llm is not None:
            # The output handler first: it would log the engine core's exit as a failure.
            handler = getattr(llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
            await asyncio.to_thread(llm.shutdown, _SHUTDOWN_TIMEOUT_S)
        processes.stop_resource_tracker()
        await asyncio.to_thread(processes.reap, self._children, _SHUTDOWN_TIMEOUT_S)
        if self._model_dir is not None:
            self._model_dir.cleanup()
        self._tokenizer = None


def _request_error(exc: Exception) -> Exception:
    """vLLM's refusal of one request as the daemon's error; anything else as an engine failure."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return EngineFailedError("the engine failed; the daemon is restarting")
    if isinstance(exc, VLLMClientError | ValueError):
        return InvalidRequestError("prompt", f"vLLM refused the request: {exc}")
    return exc


def create_engine(settings: Any) -> VllmEngine:
    """The vLLM engine the daemon serves with (cli.py calls this for --engine vllm)."""
    return VllmEngine(settings)
