"""The single overlay's Deployment from mesh/, run by `podman kube play` against the built CPU image.

The manifest's env, args, ports, securityContext (uid 10001, read-only root, no capabilities), volumes
and probes must bring the pod to ready and serve one gRPC and one OpenAI request; kube.for_podman lists
the few things replaced because they need a cluster. A manifest that disagrees with the image must fail
here: test_mismatch_is_caught moves the gRPC port where the image does not listen.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from autoglm_client import Client
from tests.container.kube import Pod, for_podman, probe_port, rendered_deployment, workload
from tests.container.podman import run

pytestmark = pytest.mark.timeout(1800)
READY_WITHIN_S = 600  # the startup probe's own budget: periodSeconds 10 x failureThreshold 60


@pytest.fixture
def pods(podman_env: dict[str, str], tmp_path: Path) -> Iterator[list[Pod]]:
    started: list[Pod] = []
    try:
        yield started
    finally:
        for pod in started:
            pod.down()


def play(deployment: dict[str, Any], image: str, env: dict[str, str], directory: Path, pods: list[Pod]) -> Pod:
    pod = Pod(for_podman(deployment, image, f"autoglm-ci-{uuid.uuid4().hex[:8]}"), directory, env)
    pods.append(pod)
    pod.play()
    return pod


def test_deployment_serves(cpu_image: str, podman_env: dict[str, str], tmp_path: Path, pods: list[Pod]) -> None:
    pod = play(rendered_deployment(), cpu_image, podman_env, tmp_path, pods)
    pod.wait_ready(READY_WITHIN_S)
    container = workload(pod.deployment)
    inspect = "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}"
    user, read_only, *_ = run(["podman", "inspect", "--format", inspect, pod.container_id], podman_env).stdout.split()
    assert (user.split(":")[0], read_only) == ("10001", "true")
    assert run(["podman", "exec", pod.container_id, "id", "-u"], podman_env).stdout.strip() == "10001"
    # The image's writable places (its ENV, or the manifest's) are writable under the manifest's volumes as
    # uid 10001: an s3:// start would write its model cache there (tests/mesh checks the same on paper).
    probe = 'for d in "$AUTOGLM_MODEL_CACHE_DIR" "$HF_HOME"; do mkdir -p "$d" && touch "$d/.p" && echo "$d"; done'
    written = run(["podman", "exec", pod.container_id, "sh", "-c", probe], podman_env).stdout.split()
    assert written == ["/var/cache/autoglm/models", "/var/cache/autoglm/hf"], written

    with Client(f"127.0.0.1:{probe_port(container, 'grpc')}", timeout=120) as client:
        assert client.generate_text("Hello", max_new_tokens=4).usage.completion_tokens >= 1
    base_url = f"http://127.0.0.1:{probe_port(container, 'http-openai')}/v1"
    sdk = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    model = sdk.models.list().data[0].id
    reply = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.choices[0].finish_reason in {"stop", "length"}


def test_mismatch_is_caught(cpu_image: str, podman_env: dict[str, str], tmp_path: Path, pods: list[Pod]) -> None:
    """A manifest whose gRPC port (50052) is not the image's (50051) never gets ready: the test says why."""
    deployment = rendered_deployment()
    container = workload(deployment)
    container["env"] = [e for e in container["env"] if e["name"] != "AUTOGLM_LISTEN"]
    for port in container["ports"]:
        if port["name"] == "grpc":
            port["containerPort"] = 50052
    for probe in ("startupProbe", "livenessProbe"):
        container[probe]["grpc"]["port"] = 50052
    pod = play(deployment, cpu_image, podman_env, tmp_path, pods)
    with pytest.raises(AssertionError, match=r"manifest/image mismatch: .* startup probe"):
        pod.wait_ready(READY_WITHIN_S)
