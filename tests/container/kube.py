"""Run the rendered Deployment from mesh/ with `podman kube play`, and act as its kubelet's probes.

podman reads the pod spec (image, args, env, ports, securityContext, volumes) but runs none of the
Deployment's probes the way a kubelet does (gRPC probes not at all), so `wait_ready` runs them from the
spec: the startup probe, then the readiness probe, each against the host port podman published for the
port the probe names. If the image's own HEALTHCHECK command (run with `podman exec`: kube play does not
keep it) passes while the manifest's probes fail, the manifest and the image disagree (a port, a path),
and that is reported at once instead of a rollout that never becomes ready.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.container.podman import REPO, logs, run, state
from tests.container.probes import grpc_serving, http_status
from tests.helpers.openbao import free_port

CONTAINER = "autoglm-server"


def rendered_deployment() -> dict[str, Any]:
    """The single overlay's Deployment, exactly as `kubectl kustomize mesh/overlays/single` renders it."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "mesh/overlays/single")], capture_output=True, text=True, check=True
    ).stdout
    deployments = [doc for doc in yaml.safe_load_all(rendered) if doc and doc.get("kind") == "Deployment"]
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    deployment: dict[str, Any] = deployments[0]
    return deployment


def workload(deployment: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = [c for c in spec["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, spec["containers"]
    return found[0]


def for_podman(deployment: Mapping[str, Any], image: str, name: str) -> dict[str, Any]:
    """The Deployment with only what needs a cluster replaced; everything else is the manifest's own.

    - image: the release pipeline pins it by digest; here the locally built image, never pulled.
    - auth: Vault's Kubernetes login needs an API server (TokenReview), and podman has no projected
      service-account token: auth is turned off and the vault-token volume left out.
    - ports: a Service reaches pods in a cluster; here each containerPort gets a free 127.0.0.1 host port.
    - one replica (the HorizontalPodAutoscaler owns the count), and a unique name.
    """
    patched = copy.deepcopy(dict(deployment))
    patched["metadata"] = {**patched["metadata"], "name": name}
    patched["metadata"].pop("namespace", None)
    patched["spec"]["replicas"] = 1
    spec = patched["spec"]["template"]["spec"]
    container = workload(patched)
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    env = [e for e in container.get("env", []) if e["name"] != "AUTOGLM_AUTH"]
    container["env"] = [*env, {"name": "AUTOGLM_AUTH", "value": "disabled"}]
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] != "vault-token"]
    container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["name"] != "vault-token"]
    for port in container.get("ports", []):
        port["hostPort"] = free_port()
        port["hostIP"] = "127.0.0.1"
    return patched


def probe_port(container: Mapping[str, Any], port: int | str) -> int:
    """The host port published for the container port a probe names (by number or by name)."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["hostPort"])
    raise AssertionError(f"a probe names port {port!r}, which the container does not declare")


def probe_passes(container: Mapping[str, Any], probe: Mapping[str, Any]) -> bool:
    if "grpc" in probe:
        return grpc_serving(probe_port(container, probe["grpc"]["port"]), probe["grpc"].get("service", ""))
    if "httpGet" in probe:
        get = probe["httpGet"]
        return 200 <= http_status(probe_port(container, get["port"]), get.get("path", "/")) < 400
    raise AssertionError(f"probe kind not run by this harness: {sorted(probe)}")


class Pod:
    """One `podman kube play` of a patched Deployment; `down()` removes its pod by id."""

    def __init__(self, deployment: Mapping[str, Any], directory: Path, env: Mapping[str, str]) -> None:
        self.deployment = deployment
        self.env = env
        self.path = directory / f"{deployment['metadata']['name']}.yaml"
        self.path.write_text(yaml.safe_dump(dict(deployment), sort_keys=False))
        self.pod_id = ""
        self.container_id = ""

    def play(self) -> None:
        # podman 4.3 names a Deployment's pod NAME-pod-0; look it up by prefix, also when play fails half-way.
        played = run(["podman", "kube", "play", "--quiet", str(self.path)], self.env, check=False, timeout=300)
        name = self.deployment["metadata"]["name"]
        found = run(["podman", "pod", "ps", "--filter", f"name=^{name}-pod", "--format", "{{.ID}}"], self.env)
        self.pod_id = found.stdout.strip()
        assert played.returncode == 0, played.stdout + played.stderr
        assert len(self.pod_id.split()) == 1, found.stdout
        filters = ["--filter", f"pod={self.pod_id}", "--filter", f"name={CONTAINER}$"]
        self.container_id = run(["podman", "ps", "--all", *filters, "--format", "{{.ID}}"], self.env).stdout.strip()
        assert self.container_id, played.stdout

    def image_healthy(self) -> bool:
        """The image's own HEALTHCHECK command, run in the container (kube play does not carry it over)."""
        image = workload(self.deployment)["image"]
        raw = run(["podman", "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image], self.env).stdout
        test = json.loads(raw)["Test"]
        assert test[0] == "CMD", test
        return run(["podman", "exec", self.container_id, *test[1:]], self.env, check=False).returncode == 0

    def wait_ready(self, timeout_s: float) -> None:
        """The kubelet's part: the startup probe, then readiness; fail fast on a mismatch or an exit."""
        container = workload(self.deployment)
        deadline = time.monotonic() + timeout_s
        started = False
        healthy_since: float | None = None
        while time.monotonic() < deadline:
            if state(self.container_id, self.env) != "running":
                raise AssertionError(f"the pod's container stopped before ready:\n{self.logs()}")
            started = started or probe_passes(container, container["startupProbe"])
            if started and probe_passes(container, container["readinessProbe"]):
                return
            # The image's HEALTHCHECK says the model is loaded and serving, so the probe's start-up budget
            # (10 minutes for the model load) no longer applies: two more of its periods, then it is a mismatch.
            probe = container["readinessProbe" if started else "startupProbe"]
            grace = 2 * probe.get("periodSeconds", 10) + probe.get("timeoutSeconds", 1)
            if not self.image_healthy():
                healthy_since = None
            elif healthy_since is None:
                healthy_since = time.monotonic()
            elif time.monotonic() - healthy_since > grace:
                raise AssertionError(
                    "manifest/image mismatch: the image's HEALTHCHECK passes but the manifest's "
                    f"{'readiness' if started else 'startup'} probe has failed for {grace} s:\n{self.logs()}"
                )
            time.sleep(1)
        raise AssertionError(f"the pod was not ready within {timeout_s:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        return logs(self.container_id, self.env)

    def down(self) -> None:
        for pod_id in self.pod_id.split():
            run(["podman", "pod", "rm", "--force", pod_id], self.env, check=False, timeout=120)
