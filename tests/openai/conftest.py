"""The daemons this folder's modules share (starting one costs most of a module's time on a small
machine): one with auth on (a real OpenBao) and traces to an OTLP receiver; and a vision daemon with
one batch row, no queue and low image caps, auth off, in two kinds (`vision_backend`): over the vision
stand-in (vision_standin.py, builtin:tiny rendering images as text) and over builtin:glm4v-tiny, the
real GLM-4.1V `make serve` starts. The hostile-image, overload and cancel tests run against both, so
the image rules, 429s and freed rows are those of a real vision tower too.

The drain test (test_overload_and_cancel.py) stops the vision daemon: the hook below runs it after
every other test of its kind in this folder, whatever order the files were named in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.openbao import OpenBao, running_openbao
from tests.helpers.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.openai.support import SERVED, bootstrap_vault, daemon_vault_env, mint, running_module_daemon

# The stand-in daemon's caps, low so that the tests' bodies stay small.
MAX_IMAGE_BYTES = 200_000
IMAGES_PER_REQUEST = 2
MAX_REQUEST_BYTES = 1024 * 1024
DRAIN_TEST = "test_draining_health_is_503_and_new_calls_are_refused_while_a_stream_finishes"
HERE = Path(__file__).parent


@pytest.hookimpl(trylast=True)  # after pytest grouped the items by vision_backend
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move each drain test behind the last test of this folder on the same vision daemon (it ends it)."""
    for drain in [item for item in items if item.name.split("[")[0] == DRAIN_TEST]:
        backend = _backend(drain)
        items.remove(drain)
        ours = [index for index, item in enumerate(items) if HERE in item.path.parents and _backend(item) == backend]
        last = ours[-1] if ours else len(items) - 1
        items.insert(last + 1, drain)


def _backend(item: pytest.Item) -> object:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("vision_backend") if callspec is not None else None


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


VISION_BACKENDS = ("standin", "glm4v")


@pytest.fixture(scope="package", params=VISION_BACKENDS)
def vision_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="package")
def vision_daemon(vision_backend: str) -> Iterator[Daemon]:
    """As autoglm-phone-9b: --max-running 1 --max-waiting 0, image caps from the daemon's own flags,
    prompts logged (to see what the engine was given); builtin:tiny behind the vision stand-in, or
    builtin:glm4v-tiny itself."""
    args = ["--auth", "disabled", "--served-model-name", SERVED, "--log-format", "json", "--log-prompts"]
    args += ["--max-running", "1", "--max-waiting", "0"]
    args += ["--max-image-bytes", str(MAX_IMAGE_BYTES), "--limit-images-per-request", str(IMAGES_PER_REQUEST)]
    args += ["--max-request-bytes", str(MAX_REQUEST_BYTES)]
    if vision_backend == "glm4v":
        with running_daemon("--model", "builtin:glm4v-tiny", *args) as running:
            yield running
        return
    with running_module_daemon("tests.openai.vision_standin", *args) as running:
        yield running
