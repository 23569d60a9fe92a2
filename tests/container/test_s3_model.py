"""Issue 18, acceptance 4: the image pulls its model from a real S3 server and serves it.

A SeaweedFS on the host's 127.0.0.1 holds builtin:tiny, pushed with `autoglm-server model push`. The CPU
image runs read-only, `--cap-drop ALL`, as the image's uid 10001, with the endpoint and the keys in its
environment only (`-e NAME` copies each from podman's own environment, so no secret is in a command line).
The container shares the host's network (`--network host`: this host has no slirp4netns for a private
network that still reaches the host's loopback), so the daemon listens on 127.0.0.1 port 0 like every test
server here and reports its ports in a port file read with `podman exec`.

The model cache is a named volume on the image's documented AUTOGLM_MODEL_CACHE_DIR (/var/cache/autoglm/models,
created owned by 10001, so the empty volume starts with that owner). A second container on the same volume
holds keys that may list but not read objects: it can only serve if it fetched nothing, the server's own
permissions proving the verified cache hit (as tests/model_source/test_serve_s3.py does for the daemon).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from autoglm_client import Client
from tests.container.podman import logs, run, wait_until
from tests.container.probes import http_status
from tests.helpers.scrape import Snapshot, scrape
from tests.helpers.seaweedfs import ADMIN, LISTER, READER, SeaweedFS

pytestmark = pytest.mark.timeout(1800)
BUCKET = "models"
RELEASE = f"s3://{BUCKET}/tiny/v1"
CACHE_DIR = "/var/cache/autoglm/models"  # the image's AUTOGLM_MODEL_CACHE_DIR (Dockerfile, README)
PORT_FILE = "/tmp/ports.json"  # --read-only keeps /tmp a writable tmpfs
# Passed by name only (`-e NAME`): podman copies the value from its own environment.
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


@pytest.fixture(scope="module")
def seaweedfs() -> Iterator[SeaweedFS]:
    server = SeaweedFS()
    server.start()
    try:
        server.client(ADMIN).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def release(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> str:
    """builtin:tiny saved as a Hugging Face folder and pushed as an operator would, with the CLI."""
    from autoglm_server.engine import builtin_models

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = builtin_models.build_tokenizer()
    builtin_models.build_model(tokenizer, "builtin:tiny").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cli = Path(sys.executable).with_name("autoglm-server")
    env = {**_clean_env(), **seaweedfs.env(ADMIN)}
    command = [str(cli), "model", "push", str(folder), RELEASE, "--s3-addressing-style", "path"]
    pushed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    return RELEASE


@pytest.fixture
def cache_volume(podman_env: dict[str, str]) -> Iterator[str]:
    name = f"autoglm-ci-model-cache-{uuid.uuid4().hex[:8]}"
    run(["podman", "volume", "create", name], podman_env)
    try:
        yield name
    finally:
        run(["podman", "volume", "rm", "--force", name], podman_env, check=False)


def _clean_env() -> dict[str, str]:
    """The environment without any AWS profile or endpoint of the machine (only the test server's count)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


class S3Container:
    """One `podman run` of the image serving RELEASE; `remove()` removes it by id."""

    def __init__(self, image: str, podman_env: dict[str, str], server: SeaweedFS, keys: tuple[str, str]) -> None:
        self.env = {**{k: v for k, v in podman_env.items() if not k.startswith("AWS_")}, **server.env(keys)}
        self.image = image
        self.cid = ""
        self.ports: dict[str, int] = {}

    def start(self, volume: str, release: str) -> None:
        settings = {
            "AUTOGLM_AUTH": "disabled",
            "AUTOGLM_MODEL": release,
            "AUTOGLM_S3_ADDRESSING_STYLE": "path",
            "AUTOGLM_SERVED_MODEL_NAME": "tiny",
            "AUTOGLM_LISTEN": "127.0.0.1:0",
            "AUTOGLM_HTTP_LISTEN": "127.0.0.1:0",
            "AUTOGLM_ADMIN_LISTEN": "127.0.0.1:0",
            "AUTOGLM_PORT_FILE": PORT_FILE,
        }
        command = [
            "podman", "run", "-d", "--read-only", "--cap-drop", "ALL", "--network", "host",
            "-v", f"{volume}:{CACHE_DIR}",
            *(arg for name, value in settings.items() for arg in ("-e", f"{name}={value}")),
            *(arg for name in S3_ENV for arg in ("-e", name)),
            self.image,
        ]  # fmt: skip
        self.cid = run(command, self.env).stdout.strip().splitlines()[-1]
        wait_until(self._ports_known, self.cid, self.env, timeout_s=600)
        wait_until(lambda: http_status(self.ports["http"], "/health") == 200, self.cid, self.env, timeout_s=600)

    def _ports_known(self) -> bool:
        read = run(["podman", "exec", self.cid, "cat", PORT_FILE], self.env, check=False)
        if read.returncode != 0:
            return False
        ports = json.loads(read.stdout)
        self.ports = {"grpc": ports["grpc_port"], "http": ports["http_port"], "admin": ports["admin_port"]}
        return True

    def metrics(self) -> Snapshot:
        return scrape(f"http://127.0.0.1:{self.ports['admin']}")

    def serve_one_of_each(self) -> None:
        """One gRPC Generate and one OpenAI completion, from outside the container."""
        with Client(f"127.0.0.1:{self.ports['grpc']}", timeout=120) as client:
            reply = client.generate_text("Hello", max_new_tokens=4, ignore_eos=True)
        assert len(reply.token_ids) == 4
        # A completion (not a chat): builtin:tiny's saved tokenizer has no chat template.
        base_url = f"http://127.0.0.1:{self.ports['http']}/v1"
        with OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as sdk:
            assert [m.id for m in sdk.models.list().data] == ["tiny"]
            answer = sdk.completions.create(model="tiny", prompt="Hi", max_tokens=3, extra_body={"ignore_eos": True})
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 3

    def stop(self) -> str:
        """SIGTERM: the daemon drains and exits 0; its whole log is returned."""
        run(["podman", "stop", "--time", "60", self.cid], self.env, timeout=120)
        exit_code = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", self.cid], self.env).stdout.strip()
        output = run(["podman", "logs", self.cid], self.env)
        assert exit_code == "0", logs(self.cid, self.env)
        return output.stdout + output.stderr

    def remove(self) -> None:
        if self.cid:
            run(["podman", "rm", "--force", "--time", "5", self.cid], self.env, check=False)


@pytest.fixture
def containers(podman_env: dict[str, str]) -> Iterator[list[S3Container]]:
    started: list[S3Container] = []
    try:
        yield started
    finally:
        for container in started:
            container.remove()


def test_container_serves_a_model_from_s3(
    cpu_image: str,
    podman_env: dict[str, str],
    seaweedfs: SeaweedFS,
    release: str,
    cache_volume: str,
    containers: list[S3Container],
) -> None:
    cold = S3Container(cpu_image, podman_env, seaweedfs, READER)
    containers.append(cold)
    cold.start(cache_volume, release)
    # As run: uid 10001, no capabilities at all (the daemon's own CapEff), a read-only root.
    probe = "id -u; grep CapEff /proc/1/status; touch /opt/autoglm/probe 2>/dev/null || echo read-only"
    assert run(["podman", "exec", cold.cid, "sh", "-c", probe], cold.env).stdout.split() == [
        "10001",
        "CapEff:",
        "0000000000000000",
        "read-only",
    ]
    cold.serve_one_of_each()
    metrics = cold.metrics()
    assert metrics.value("autoglm_model_cache_hit") == 0
    assert metrics.value("autoglm_model_fetched_bytes") == metrics.value("autoglm_model_size_bytes") > 10e6
    cold_log = cold.stop()
    assert "fetching snapshot" in cold_log, cold_log[-3000:]

    # The same volume, keys that may list but not read: only a verified cache hit can serve.
    warm = S3Container(cpu_image, podman_env, seaweedfs, LISTER)
    containers.append(warm)
    warm.start(cache_volume, release)
    warm.serve_one_of_each()
    metrics = warm.metrics()
    assert metrics.value("autoglm_model_cache_hit") == 1
    assert metrics.value("autoglm_model_fetched_bytes") == 0
    warm_log = warm.stop()
    assert "verified cache hit" in warm_log, warm_log[-3000:]
    assert "fetching snapshot" not in warm_log

    for secret in (READER[1], LISTER[1], ADMIN[1]):
        assert secret not in cold_log
        assert secret not in warm_log
