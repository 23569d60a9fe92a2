"""Session fixtures: the container tools' environment and the CPU image, built once from a clean tree."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.container.podman import (
    IMAGE,
    REPO,
    clean_tree,
    containers_conf,
    local_build_args,
    require_tools,
    run,
    tool_env,
)


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_tools()
    return tool_env(containers_conf(tmp_path_factory.mktemp("containers")))


@pytest.fixture(scope="session")
def cpu_image(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image` in a copy of the clean tree (the base stand-in first: .ci/base-image.sh, cached)."""
    started = time.monotonic()
    run(["bash", str(REPO / ".ci/base-image.sh")], podman_env, timeout=900)
    base_s = time.monotonic() - started
    tree = clean_tree(tmp_path_factory.mktemp("tree"))
    build_args, extra = local_build_args()
    env = {**podman_env, **extra, "IMAGE_BUILD_ARGS": build_args}
    command = ["make", "image", f"IMAGE={IMAGE}"]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, f"make image failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
    summary = [line for line in result.stdout.splitlines() if line.startswith("build-image:")]
    assert summary, result.stdout[-2000:]
    # The figures CI reports (pytest -s shows them; the build time counts cached layers as done).
    print(f"\n{summary[-1]}; base stand-in step {base_s:.0f} s")
    return IMAGE
