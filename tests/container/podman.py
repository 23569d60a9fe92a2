"""Build and run the image with Debian's buildah/podman/runc, as root, on a machine without Docker.

What this host needs and an operator's does not (all here, none in the Dockerfile):
- the base image is a debootstrap stand-in (.ci/base-image.sh: no registry is reachable);
- buildah RUN steps use chroot isolation (crun/runc refuse this host's hybrid cgroups for builds);
- podman uses runc and explicit ulimits (no CAP_SYS_RESOURCE to raise them), set in a containers.conf
  of the test's own (CONTAINERS_CONF), so the machine's configuration is untouched;
- torch's +cpu wheel comes from the local wheel directory pip is configured with (PIP_FIND_LINKS).
Every container and pod a test starts is removed by its id or name at the end of the test.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/autoglm-server:ci"
TOOLS = ("buildah", "podman", "runc")


def require_tools() -> None:
    """Skip (with the reason) where the container tools are missing or cannot work (they need root here)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"container tools missing: {', '.join(missing)} (root on Debian: bash .ci/container-tools.sh)")
    if os.geteuid() != 0:
        pytest.skip("tests/container run buildah/podman as root (rootless storage is not set up here)")


def containers_conf(directory: Path) -> Path:
    """A containers.conf for this host: runc, and ulimits no higher than the hard limits we hold."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    path = directory / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return path


def tool_env(conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf)
    env["BUILDAH_ISOLATION"] = "chroot"
    return env


def local_build_args() -> tuple[str, dict[str, str]]:
    """IMAGE_BUILD_ARGS / PIP_CA for this machine: the local torch +cpu wheel directory and CA bundle.

    Elsewhere (nothing configured) the Dockerfile's defaults apply: PyPI and the PyTorch CPU index.
    """
    args: list[str] = []
    extra: dict[str, str] = {}
    for directory in os.environ.get("PIP_FIND_LINKS", "").split():
        if Path(directory).is_dir() and any(Path(directory).glob("torch-*+cpu-*.whl")):
            args += [f"-v {directory}:{directory}:ro", f"--build-arg PIP_FIND_LINKS={directory}"]
            args.append("--build-arg TORCH_INDEX_URL=")
            break
    ca = os.environ.get("PIP_CERT", "")
    if ca and Path(ca).is_file():
        extra["PIP_CA"] = ca
    return " ".join(args), extra


def clean_tree(destination: Path) -> Path:
    """Copy what a clean clone holds (tracked files and new files git does not ignore), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / os.fsdecode(raw)
        if source.is_file():
            target = destination / os.fsdecode(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run(
    args: Sequence[str], env: Mapping[str, str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return result


def host_port(container: str, port: int, env: Mapping[str, str]) -> int:
    """The 127.0.0.1 port podman published for a container port."""
    mapping = run(["podman", "port", container, f"{port}/tcp"], env).stdout.strip().splitlines()[0]
    return int(mapping.rsplit(":", 1)[1])


def state(container: str, env: Mapping[str, str]) -> str:
    return run(["podman", "inspect", "--format", "{{.State.Status}}", container], env).stdout.strip()


def wait_until(ready: object, container: str, env: Mapping[str, str], timeout_s: float) -> None:
    """Poll `ready()` until it is true; fail at once, with the logs, if the container stops first."""
    assert callable(ready)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if state(container, env) not in {"running", "created", "configured", "initialized"}:
            raise AssertionError(f"container {container} stopped before ready:\n{logs(container, env)}")
        time.sleep(0.5)
    raise AssertionError(f"container {container} not ready within {timeout_s:.0f} s:\n{logs(container, env)}")


def logs(container: str, env: Mapping[str, str]) -> str:
    """The container's output (the daemon logs on stderr), its last 3000 characters."""
    result = run(["podman", "logs", container], env, check=False)
    return (result.stdout + result.stderr)[-3000:]
