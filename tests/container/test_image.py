"""The CPU image as an operator runs it: read-only root, no capabilities, uid 10001, served from outside.

One container serves every check below (start-up takes the model's load), then `podman stop` drains it
while a stream is in flight. Auth is off here (`-e AUTOGLM_AUTH=disabled`, the documented local trial):
with auth on the daemon needs a Vault, which test_plain_run_refuses covers from the other side.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from openai import OpenAI

from autoglm_client import Client, HealthStatus
from tests.container.podman import host_port, run, wait_until
from tests.container.probes import grpc_serving, http_body, http_status

pytestmark = pytest.mark.timeout(1800)
PORTS = {"grpc": 50051, "http": 8000, "admin": 9090}
READINESS = "autoglm.v1.GenerationService"


@pytest.fixture(scope="module")
def container(cpu_image: str, podman_env: dict[str, str]) -> Iterator[tuple[str, dict[str, int]]]:
    publish = [arg for port in PORTS.values() for arg in ("-p", f"127.0.0.1::{port}")]
    started = run(
        ["podman", "run", "-d", "--read-only", "--cap-drop", "ALL", *publish, "-e", "AUTOGLM_AUTH=disabled", cpu_image],
        podman_env,
    )
    cid = started.stdout.strip().splitlines()[-1]
    try:
        ports = {name: host_port(cid, port, podman_env) for name, port in PORTS.items()}
        wait_until(lambda: http_status(ports["http"], "/health") == 200, cid, podman_env, timeout_s=600)
        yield cid, ports
    finally:
        run(["podman", "rm", "--force", "--time", "5", cid], podman_env, check=False)


def test_plain_run_refuses_with_a_clear_message(cpu_image: str, podman_env: dict[str, str]) -> None:
    """`podman run IMAGE` and nothing else: auth is on and no Vault is named, so it exits 1 saying so."""
    result = run(["podman", "run", "--rm", cpu_image], podman_env, check=False, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    # The daemon logs JSON lines on stderr; podman's own complaints (no systemd for health timers) are not JSON.
    lines = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    errors = [line["message"] for line in lines if line["level"] == "error"]
    assert errors, result.stdout + result.stderr
    assert errors[-1].startswith("cannot start: authentication is on but cannot be set up: no Vault address")
    assert "--auth disabled" in errors[-1]


def test_image_holds_no_build_tools(cpu_image: str, podman_env: dict[str, str]) -> None:
    probe = (
        "import importlib.util, shutil, os, json; "
        "print(json.dumps({'modules': [m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)], "
        "'programs': [p for p in ('gcc', 'cc', 'pip', 'pip3', 'c++') if shutil.which(p)], "
        "'caches': [d for d in ('/root/.cache', '/var/cache/autoglm/.cache') if os.path.exists(d)]}))"
    )
    result = run(["podman", "run", "--rm", "--entrypoint", "python", cpu_image, "-c", probe], podman_env)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"modules": [], "programs": [], "caches": []}
    user = run(["podman", "image", "inspect", "--format", "{{.Config.User}}", cpu_image], podman_env).stdout.strip()
    assert user == "10001:10001"


def test_serves_from_outside(container: tuple[str, dict[str, int]], podman_env: dict[str, str]) -> None:
    cid, ports = container
    assert run(["podman", "exec", cid, "id", "-u"], podman_env).stdout.strip() == "10001"
    assert grpc_serving(ports["grpc"])
    assert grpc_serving(ports["grpc"], READINESS)
    with Client(f"127.0.0.1:{ports['grpc']}", timeout=120) as client:
        assert client.health(READINESS) == HealthStatus.SERVING
        result = client.generate_text("Hello", max_new_tokens=4)
    assert result.usage.completion_tokens >= 1
    assert result.request_id

    sdk = OpenAI(base_url=f"http://127.0.0.1:{ports['http']}/v1", api_key="unused", max_retries=0, timeout=120)
    model = sdk.models.list().data[0].id
    chunks = list(
        sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
    )
    assert any(chunk.choices and chunk.choices[0].finish_reason for chunk in chunks)

    metrics = http_body(ports["admin"], "/metrics")
    assert "autoglm_requests_total" in metrics or "autoglm_" in metrics


def test_healthcheck_reports_healthy(container: tuple[str, dict[str, int]], podman_env: dict[str, str]) -> None:
    """The image's HEALTHCHECK, run by podman (no systemd here to run it on a timer)."""
    cid, _ = container
    run(["podman", "healthcheck", "run", cid], podman_env)
    status = run(["podman", "inspect", "--format", "{{.State.Health.Status}}", cid], podman_env).stdout.strip()
    assert status == "healthy"


def test_stop_drains_and_exits_zero(container: tuple[str, dict[str, int]], podman_env: dict[str, str]) -> None:
    """SIGTERM with a stream in flight: the stream finishes, the process exits 0 (runs last in this module)."""
    cid, ports = container
    sdk = OpenAI(base_url=f"http://127.0.0.1:{ports['http']}/v1", api_key="unused", max_retries=0, timeout=120)
    model = sdk.models.list().data[0].id
    stream = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count"}], max_tokens=200, stream=True
    )
    first = next(iter(stream))
    assert first.choices is not None
    stopper = threading.Thread(target=run, args=(["podman", "stop", "--time", "60", cid], podman_env), daemon=True)
    stopper.start()
    finished = [chunk.choices[0].finish_reason for chunk in stream if chunk.choices and chunk.choices[0].finish_reason]
    stopper.join(timeout=120)
    assert finished
    assert finished[-1] in {"stop", "length"}
    while run(["podman", "inspect", "--format", "{{.State.Status}}", cid], podman_env).stdout.strip() == "running":
        time.sleep(0.2)
    assert run(["podman", "inspect", "--format", "{{.State.ExitCode}}", cid], podman_env).stdout.strip() == "0"
    logs = run(["podman", "logs", cid], podman_env)
    assert "SIGTERM received: draining" in logs.stdout + logs.stderr
