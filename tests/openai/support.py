"""What the OpenAI-front-door tests share: tokens from a real OpenBao, SDK clients, polls, log lines."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import hvac
import openai

from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.mint import MintRequest, mint_token
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultSession
from tests.helpers.daemon import Daemon, _daemon_env, _stop, _wait_for_ports, _wait_ready
from tests.helpers.openbao import OpenBao
from tests.helpers.scrape import Snapshot, scrape

T = TypeVar("T")
KEY = "autoglm-jwt"
# The name Open-AutoGLM sends (`--model autoglm-phone-9b`); the daemons here serve builtin:tiny under it.
SERVED = "autoglm-phone-9b"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- auth: a real OpenBao set up by `autoglm-server vault bootstrap`'s code, tokens minted through it ---


def _session(server: OpenBao) -> VaultSession:
    return VaultSession(VaultSettings(vault_addr=server.addr, vault_token=server.root_token))


def bootstrap_vault(server: OpenBao) -> None:
    plan = BootstrapPlan("transit", KEY, 3600, "approle", "kubernetes", "", "", "autoglm", "autoglm", 3600)
    bootstrap(_session(server), plan)


def mint(server: OpenBao, scope: str) -> str:
    request = MintRequest("openai-tester", scope.split(), 600, "autoglm-serve", ["autoglm"])
    return mint_token(_session(server), "transit", KEY, request)


def daemon_vault_env(server: OpenBao) -> dict[str, str]:
    """The daemon's Vault address and a token of the policy bootstrap wrote for it."""
    root = hvac.Client(url=server.addr, token=server.root_token)
    token = str(root.auth.token.create(policies=["autoglm-daemon"], ttl="1h")["auth"]["client_token"])
    return {"VAULT_ADDR": server.addr, "VAULT_TOKEN": token}


# --- SDK clients ---------------------------------------------------------------------------------------


def sdk(daemon: Daemon, api_key: str, **options: Any) -> openai.OpenAI:
    """The official sync client against the daemon; no retries, so a status reaches the test as it is."""
    options = {"max_retries": 0, "timeout": 120.0, **options}
    return openai.OpenAI(base_url=daemon.http_url, api_key=api_key, **options)


def async_sdk(daemon: Daemon, api_key: str, **options: Any) -> openai.AsyncOpenAI:
    options = {"max_retries": 0, "timeout": 120.0, **options}
    return openai.AsyncOpenAI(base_url=daemon.http_url, api_key=api_key, **options)


def root_url(daemon: Daemon) -> str:
    """The HTTP front door without /v1 (where /health lives)."""
    return daemon.http_url.removesuffix("/v1")


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The OpenAI error object the daemon sent: {"message", "type", "param", "code"}."""
    body = error.response.json()
    assert set(body) == {"error"}, body
    inner: dict[str, Any] = body["error"]
    return inner


# --- waiting for what the daemon reports ------------------------------------------------------------------


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None; fail after `timeout` seconds saying `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen in {timeout} s: {what}")
        time.sleep(interval)


def wait_for_metrics(daemon: Daemon, check: Callable[[Snapshot], bool], *, timeout: float, what: str) -> Snapshot:
    """Scrape the admin port's /metrics until `check` holds for one scrape; return that scrape."""

    def probe() -> Snapshot | None:
        snapshot = scrape(daemon.admin_url)
        return snapshot if check(snapshot) else None

    return wait_for(probe, timeout=timeout, what=what, interval=0.1)


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (start it with --log-format json)."""
    lines: list[dict[str, Any]] = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


# --- a daemon run by another entry point (the vision stand-in) ------------------------------------------------


@contextlib.contextmanager
def running_module_daemon(module: str, *args: str, timeout: float = 120.0) -> Iterator[Daemon]:
    """Like tests.helpers.daemon.running_daemon, for `python -m module` taking the same flags as `serve`."""
    with tempfile.TemporaryDirectory(prefix="autoglm-openai-") as workdir:
        port_file = Path(workdir) / "ports.json"
        log_path = Path(workdir) / "daemon.log"
        argv = [sys.executable, "-m", module, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        argv += ["--http-listen", "127.0.0.1:0", "--port-file", str(port_file), *args]
        with log_path.open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_daemon_env(None), cwd=REPO_ROOT)
        try:
            daemon = _wait_for_ports(process, port_file, log_path, timeout)
            _wait_ready(daemon, timeout)
            yield daemon
        finally:
            _stop(process)
