"""Builds the daemon and owns its lifecycle: start-up and the shutdown sequence.

Start-up: bind the gRPC server (health says NOT_SERVING), start the admin server, load and warm
the engine, then report SERVING. Shutdown on SIGTERM/SIGINT: readiness NOT_SERVING at once, new
calls get UNAVAILABLE, in-flight streams run on up to --drain-timeout, the rest end with UNAVAILABLE,
then server.stop(grace), engine shutdown, traces flushed, exit 0. A second signal exits at once.
If the engine loop dies, health goes NOT_SERVING and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import grpc

from autoglm_server import names
from autoglm_server.admin_http import AdminServer
from autoglm_server.auth.context import current_principal
from autoglm_server.auth.setup import AuthRuntime, build_auth
from autoglm_server.auth.vault import VaultError
from autoglm_server.config import Settings
from autoglm_server.engine.protocol import Engine
from autoglm_server.engine.types import ANONYMOUS_TENANT
from autoglm_server.errors import StartupError
from autoglm_server.frontends.grpc.decode_guard import DecodeGuardInterceptor
from autoglm_server.frontends.grpc.health import HealthReporter
from autoglm_server.frontends.grpc.service import GenerationServicer, register
from autoglm_server.frontends.openai.routes import FrontendConfig, OpenAIFrontend
from autoglm_server.frontends.openai.server import HttpServer
from autoglm_server.lifecycle import Phase, ServingState
from autoglm_server.model_source.resolve import ResolvedModel
from autoglm_server.observability.metrics import Metrics
from autoglm_server.observability.setup import build_observability
from autoglm_server.serving.images.limits import ImageLimits
from autoglm_server.serving.pipeline import ServingPipeline
from autoglm_server.serving.validate import RequestLimits
from autoglm_server.tls import TlsConfigError, server_credentials

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ENGINE_FAILED = 70  # EX_SOFTWARE: the engine loop died; the orchestrator should restart us
EXIT_SECOND_SIGNAL = 130
READINESS_POLL_S = 1.0
# How long cut-off streams get to send their UNAVAILABLE before the server stops.
CUT_GRACE_S = 2.0


def _build_auth(settings: Settings) -> AuthRuntime | None:
    try:
        return build_auth(settings)
    except (VaultError, ValueError) as error:
        raise StartupError(
            f"authentication is on but cannot be set up: {error} "
            "(configure a key source, or pass --auth disabled for local development)"
        ) from None


def _bind_auth_metrics(auth: AuthRuntime, metrics: Metrics) -> None:
    """Auth failures by reason; key age counts from the last successful fetch (staleness)."""
    auth.on_failure = metrics.auth_failure
    auth.keyring.add_listener(lambda _keys: metrics.key_refreshed(time.time()))


def _tenant() -> str:
    principal = current_principal()
    return principal.tenant if principal is not None else ANONYMOUS_TENANT


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StartupError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Transport limits: bounded messages and metadata, keepalive abuse protection."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.http2.min_ping_interval_without_data_ms", int(settings.keepalive_min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * 1000)))
    return options


class Daemon:
    """One serving process: gRPC server, admin server, engine."""

    def __init__(self, settings: Settings, engine: Engine, model_source: ResolvedModel | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._model_source = model_source
        self._state = ServingState()
        self._health = HealthReporter()
        self._stop = asyncio.Event()
        self._exit_code = EXIT_OK
        self._signals = 0
        self._server: grpc.aio.Server | None = None
        self._admin: AdminServer | None = None
        self._http: HttpServer | None = None
        self.http_port = 0
        self._readiness_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self._auth: AuthRuntime | None = _build_auth(settings)
        self._obs = build_observability(
            settings,
            model_id=settings.model,
            model_version=settings.model_version,
            revision=settings.revision,
            served_model=settings.served_model_name,
        )
        if self._obs.metrics is not None:  # read at each scrape, on the admin port and the HTTP port alike
            self._obs.metrics.bind_engine(engine.stats)
        if self._auth is not None and self._obs.metrics is not None:
            _bind_auth_metrics(self._auth, self._obs.metrics)
        self._pipeline = ServingPipeline(
            engine,
            self._state,
            limits=RequestLimits(
                max_new_tokens_limit=settings.max_new_tokens_limit,
                default_max_new_tokens=settings.default_max_new_tokens,
                max_stop_strings=settings.max_stop_strings,
                max_stop_string_bytes=settings.max_stop_string_bytes,
            ),
            image_limits=ImageLimits.from_settings(settings),
            observers=self._obs.observers,
            # An s3:// model is named by its URI on both front doors, not by the cache folder the engine
            # loaded (a path that changes with every snapshot and says where the node keeps its cache).
            model_id=settings.model if model_source is not None and model_source.remote else "",
        )

    async def run(self) -> int:
        """Serve until a signal or an engine failure; return the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

        def on_engine_death(error: BaseException) -> None:  # called from the engine thread
            loop.call_soon_threadsafe(self._on_engine_death, error)

        self._engine.add_fatal_listener(on_engine_death)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self._shutdown()
        return self._exit_code

    async def _start(self) -> None:
        settings = self._settings
        if settings.auth == "disabled":
            logger.warning(
                "AUTHENTICATION IS DISABLED: any caller that reaches %s can generate. "
                "Use --auth disabled only for local development.",
                settings.listen,
            )
        await self._health.set(live=True, ready=False)
        self._server = self._build_server()
        self.grpc_port = self._bind(self._server)
        await self._server.start()
        await self._start_http()
        admin_port = self._start_admin()
        self._write_port_file(admin_port)
        if self._auth is not None:
            await self._auth.start()
        logger.info("gRPC listening on port %d; loading model %s", self.grpc_port, settings.model)
        metrics = self._obs.metrics
        if metrics is not None:
            self._engine.set_step_listener(metrics.observe_batch_size)
            source = self._model_source
            if source is not None and source.remote:
                metrics.model_fetched(
                    seconds=source.seconds,
                    size_bytes=source.total_bytes,
                    fetched_bytes=source.fetched_bytes,
                    cache_hit=source.cache_hit,
                )
        started = time.monotonic()
        await self._engine.start()
        if metrics is not None:
            metrics.engine_loaded(time.monotonic() - started)
        model = self._pipeline.model
        logger.info("model %s ready (%s on %s)", model.model_id, model.dtype, model.device)
        if self._stop.is_set():
            # A signal (or an engine death) came while we were starting: never report SERVING,
            # or a load balancer would route calls to a process that is about to exit.
            return
        self._state.phase = Phase.SERVING
        await self._refresh_readiness()
        self._readiness_task = asyncio.create_task(self._poll_readiness())

    def _build_server(self) -> grpc.aio.Server:
        settings = self._settings
        # Tracing first, so that a call refused by auth or load shedding still leaves a span.
        interceptors = list(self._obs.interceptors)
        if self._auth is not None:
            interceptors.append(self._auth.interceptor)
        # Innermost: a request that does not parse is the caller's error (INVALID_ARGUMENT).
        interceptors.append(DecodeGuardInterceptor())
        server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
        servicer = GenerationServicer(
            self._pipeline,
            model_version=settings.model_version,
            auth_enabled=settings.auth == "enabled",
            tenant_lookup=_tenant,
        )
        register(server, servicer, self._health)
        return server

    def _bind(self, server: grpc.aio.Server) -> int:
        address = self._settings.listen
        split_host_port(address)
        try:
            credentials = server_credentials(self._settings)
        except TlsConfigError as error:
            raise StartupError(str(error)) from None
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise StartupError(f"cannot listen on {address}: {error}") from None
        if port == 0:
            raise StartupError(f"cannot listen on {address} (address in use or not local)")
        return int(port)

    async def _start_http(self) -> None:
        settings = self._settings
        if not settings.http_listen:
            return
        host, port = split_host_port(settings.http_listen)
        auth = None
        if self._auth is not None:
            auth = self._auth.http
            metrics = self._obs.metrics
            if metrics is not None:
                auth.on_failure = lambda reason: metrics.auth_failure(reason, "http")
        frontend = OpenAIFrontend(
            self._pipeline,
            FrontendConfig(
                served_model_name=settings.served_model_name,
                max_request_bytes=settings.max_request_bytes,
                body_timeout_s=settings.http_body_timeout,
                scope_generate=settings.scope_generate,
                scope_models_read=settings.scope_models_read,
                access_log=settings.access_log,
                serve_metrics=settings.http_metrics,
            ),
            ready=self._ready,
            auth=auth,
            metrics=self._obs.metrics,
            tracer=self._obs.tracing.tracer,
        )
        self._http = HttpServer(frontend.app(), host, port, grace_s=CUT_GRACE_S)
        self.http_port = self._http.port
        await self._http.start()

    def _start_admin(self) -> int:
        if not self._settings.admin_listen:
            return 0
        host, port = split_host_port(self._settings.admin_listen)
        self._admin = AdminServer(host, port)
        self._admin.add_route(names.METRICS_PATH, self._obs.metrics_route())
        if self._auth is not None:
            for path, route in self._auth.admin_routes().items():
                self._admin.add_route(path, route)
        try:
            self._admin.start()
        except OSError as error:
            raise StartupError(f"cannot listen on {self._settings.admin_listen}: {error}") from None
        return self._admin.port

    def _write_port_file(self, admin_port: int) -> None:
        if not self._settings.port_file:
            return
        path = Path(self._settings.port_file)
        staging = path.with_suffix(path.suffix + ".tmp")
        ports = {"grpc_port": self.grpc_port, "http_port": self.http_port, "admin_port": admin_port}
        staging.write_text(json.dumps({**ports, "pid": os.getpid()}))
        staging.replace(path)

    def _ready(self) -> bool:
        keys_fresh = self._auth is None or self._auth.keys_fresh()
        return self._state.phase is Phase.SERVING and self._engine.stats().alive and keys_fresh

    async def _refresh_readiness(self) -> None:
        await self._health.set(live=self._engine.stats().alive, ready=self._ready())

    async def _poll_readiness(self) -> None:
        while True:
            await asyncio.sleep(READINESS_POLL_S)
            await self._refresh_readiness()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second %s: exiting now without draining", signal.Signals(signum).name)
            os._exit(EXIT_SECOND_SIGNAL)
        logger.info("%s received: draining", signal.Signals(signum).name)
        self._stop.set()

    def _on_engine_death(self, error: BaseException) -> None:
        logger.critical("engine loop died: %s; exiting so that the pod is restarted", error)
        self._exit_code = EXIT_ENGINE_FAILED
        self._state.phase = Phase.STOPPED
        # Scheduled now, it runs before the failed streams are woken (they are queued after us).
        self._health_task = asyncio.create_task(self._health.set(live=False, ready=False))
        self._stop.set()

    async def _shutdown(self) -> None:
        if self._readiness_task is not None:
            self._readiness_task.cancel()
        if self._state.phase is Phase.SERVING:
            self._state.phase = Phase.DRAINING
            await self._health.set(live=True, ready=False)
            await self._drain()
        else:
            await self._health.set(live=False, ready=False)
        if self._server is not None:
            await self._server.stop(CUT_GRACE_S)
        if self._http is not None:
            await self._http.stop()
        self._state.phase = Phase.STOPPED
        await self._engine.shutdown()
        if self._auth is not None:
            await self._auth.stop()
        if self._admin is not None:
            self._admin.stop()
        self._obs.shutdown()
        logger.info("stopped")

    async def _drain(self) -> None:
        timeout = self._settings.drain_timeout
        pending = len(self._state.in_flight())
        logger.info("draining %d in-flight streams (up to %.0f s)", pending, timeout)
        try:
            await asyncio.wait_for(self._state.wait_idle(), timeout)
            return
        except TimeoutError:
            pass
        cut = self._state.in_flight()
        logger.warning("drain timeout reached: ending %d streams with UNAVAILABLE", len(cut))
        self._state.drain_expired = True
        for request_id in cut:
            self._engine.abort(request_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._state.wait_idle(), CUT_GRACE_S)
