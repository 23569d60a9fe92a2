"""checkov on every rendered overlay and on the Dockerfile: no failed check, each skip justified inline.
hadolint on the Dockerfile: no finding."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from meshcheck.render import OVERLAYS
from meshcheck.tools import CHECKOV, HADOLINT, REPO


def _checkov(paths: list[Path], framework: str) -> list[dict[str, Any]]:
    binary = CHECKOV.require()
    args = [binary, "--framework", framework, "--output", "json", "--skip-download", "--compact"]
    for p in paths:
        args += ["--file", str(p)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed to run: {proc.stderr[-2000:]}")
    reports = json.loads(proc.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.fixture(scope="module")
def checkov_k8s(rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("rendered")
    paths = []
    for name in OVERLAYS:
        path = folder / f"{name}.yaml"
        path.write_text(rendered_text[name])
        paths.append(path)
    return _checkov(paths, "kubernetes")


def _failed(reports: list[dict[str, Any]]) -> list[str]:
    return [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports for c in r["results"]["failed_checks"]
    ]


def test_checkov_passes_rendered_manifests(checkov_k8s: list[dict[str, Any]]) -> None:
    assert _failed(checkov_k8s) == []
    assert sum(r["summary"]["passed"] for r in checkov_k8s) > 100


def _justified(text: str, pattern: str) -> set[str]:
    """Check ids skipped in TEXT with a non-empty reason."""
    return {m.group(1) for m in re.finditer(pattern, text) if m.group(2).strip()}


def _skipped(reports: list[dict[str, Any]]) -> set[str]:
    return {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}


def test_checkov_skips_are_justified_and_few(checkov_k8s: list[dict[str, Any]]) -> None:
    source = "".join(p.read_text() for p in (REPO / "mesh").rglob("*.yaml"))
    justified = _justified(source, r"checkov\.io/skip\d+: (CKV\w+)=(.*)")
    # The only skip: the image digest, which the release pipeline sets (see workload/deployment.yaml).
    assert _skipped(checkov_k8s) == {"CKV_K8S_43"}
    assert _skipped(checkov_k8s) <= justified


def test_checkov_passes_dockerfile() -> None:
    reports = _checkov([REPO / "Dockerfile"], "dockerfile")
    assert _failed(reports) == []
    justified = _justified((REPO / "Dockerfile").read_text(), r"# checkov:skip=(CKV\w+):(.*)")
    assert _skipped(reports) <= justified == {"CKV_DOCKER_7"}


def test_hadolint_passes_dockerfile() -> None:
    proc = subprocess.run(
        [HADOLINT.require(), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stages() -> dict[str, list[str]]:
    """Stage name -> its lines, in the Dockerfile's order."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.rsplit(" AS ", 1)[-1], [])
        current.append(line)
    return stages


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    stages = _stages()
    # The default target is the last stage: the CPU runtime, with no compiler.
    assert list(stages)[-1] == "runtime"
    assert {"build", "vllm"} <= set(stages)
    for name in ("runtime", "vllm"):
        assert stages[name][-1].startswith("USER 10001"), name
    assert any(ln.startswith("COPY --from=build ") for ln in stages["runtime"])
    # The vLLM image installs in place: pip and our wheels are mounted for that step, never copied in.
    vllm = "".join(stages["vllm"])
    assert "from=pip,source=/opt/pip" in vllm
    assert "from=wheels,source=/wheels" in vllm
    assert not any(ln.startswith("COPY --from=") for ln in stages["vllm"])
    assert not any("gcc" in ln or "build-essential" in ln for ln in stages["runtime"] + stages["runtime-base"])
    # Each build installs its own lock (hashes required): vLLM's, and the CPU (or CUDA) torch one.
    assert any("requirements/image-vllm.lock" in ln for ln in stages["vllm"])
    assert any("requirements/image-${TORCH_VARIANT}.lock" in ln for ln in stages["build"])
    assert all("--require-hashes" in "".join(stages[name]) for name in ("pip", "build"))
    # vLLM's lock goes in as three parts, each through scripts/image-install-part.sh (hashes required there).
    parts = [ln for ln in stages["vllm"] if "image-install-part.sh " in ln]
    assert [ln.split("image-install-part.sh ")[1].split()[0] for ln in parts] == ["cuda", "torch", "rest"]
    assert "--require-hashes" in (REPO / "scripts" / "image-install-part.sh").read_text()
