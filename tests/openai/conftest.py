"""One daemon with auth on (a real OpenBao), traces to an OTLP receiver, shared by this folder's modules
that need auth: starting it costs most of their time on a small machine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.openbao import OpenBao, running_openbao
from tests.helpers.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.openai.support import SERVED, bootstrap_vault, daemon_vault_env, mint


@dataclass(frozen=True)
class Tokens:
    """JWTs minted through Vault transit: one with the generate scope, one with models:read only."""

    generate: str
    models_read: str


@pytest.fixture(scope="package")
def vault_server() -> Iterator[OpenBao]:
    with running_openbao() as server:
        bootstrap_vault(server)
        yield server


@pytest.fixture(scope="package")
def tokens(vault_server: OpenBao) -> Tokens:
    return Tokens(generate=mint(vault_server, "generate"), models_read=mint(vault_server, "models:read"))


@pytest.fixture(scope="package")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="package")
def auth_daemon(vault_server: OpenBao, receiver: OtlpReceiver) -> Iterator[Daemon]:
    """builtin:tiny served as autoglm-phone-9b, auth on, JSON logs, spans exported every 100 ms."""
    env = {
        **daemon_vault_env(vault_server),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running_daemon("--served-model-name", SERVED, "--log-format", "json", env=env) as running:
        yield running
