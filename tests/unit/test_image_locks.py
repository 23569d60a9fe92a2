"""Each image lock pins every package the two pyproject files ask for, at a version they admit.

The image installs its lock with --no-deps (hashes required), so a dependency added to pyproject.toml and
missing from requirements/image-*.lock fails only at `make image` (its `pip check`), minutes into a build
that CI runs later: here it fails in a second, naming the lock and the package (`make lock-images` fixes it).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
OURS = {"autoglm-server", "autoglm-client"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def declared(extra: str | None = None) -> list[Requirement]:
    """What `pip install autoglm-server[extra]` asks for from others (the client's needs included)."""
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    lines = [*server["dependencies"], *client["dependencies"]]
    if extra:
        lines += server["optional-dependencies"][extra]
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.name not in OURS and (r.marker is None or r.marker.evaluate())]


def pins(lock_text: str) -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(lock_text)}


def lock_problems(lock_text: str, requirements: list[Requirement]) -> list[str]:
    pinned = pins(lock_text)
    problems = []
    for requirement in requirements:
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    return problems


LOCKS = {"image-cpu": None, "image-cuda": None, "image-vllm": "vllm"}


@pytest.mark.parametrize(("lock", "extra"), LOCKS.items())
def test_image_lock_pins_every_declared_dependency(lock: str, extra: str | None) -> None:
    text = (ROOT / "requirements" / f"{lock}.lock").read_text()
    assert lock_problems(text, declared(extra)) == [], f"requirements/{lock}.lock: run `make lock-images`"


def test_a_missing_or_out_of_range_pin_is_caught() -> None:
    text = (ROOT / "requirements" / "image-cpu.lock").read_text()
    without = re.sub(r"^boto3==.*$", "", text, flags=re.MULTILINE)
    assert lock_problems(without, declared()) == ["boto3 is not pinned"]
    old = re.sub(r"^pydantic==[^\s\\]+", "pydantic==1.10.0", text, flags=re.MULTILINE)
    assert [p for p in lock_problems(old, declared()) if p.startswith("pydantic==")] == [
        "pydantic==1.10.0 is outside <3,>=2.8"
    ]


def lock_part(part: str, lock: Path) -> str:
    """What scripts/lock-part.sh prints for one part (the Dockerfile runs it with the image's sh)."""
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "lock-part.sh"), part, str(lock)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_the_vllm_lock_parts_cover_it_exactly_once() -> None:
    """The vLLM image installs its lock in three layers: together they must be the whole lock, hashes and all."""
    lock = ROOT / "requirements" / "image-vllm.lock"
    parts = {part: lock_part(part, lock) for part in ("cuda", "torch", "rest")}
    whole = [line for line in lock.read_text().splitlines() if not line.startswith("#")]
    joined = [line for text in parts.values() for line in text.splitlines()]
    assert sorted(joined) == sorted(whole)
    assert set(pins(parts["torch"])) == {
        "torch",
        "torchvision",
        "torchaudio",
        "torchcodec",
        "torch-c-dlpack-ext",
        "triton",
    }
    assert pins(parts["cuda"])
    assert all(name.startswith(("nvidia-", "cuda-")) for name in pins(parts["cuda"]))
    assert "vllm" in pins(parts["rest"])


def test_lock_part_refuses_an_unknown_part(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "lock-part.sh"), "gpu", str(tmp_path / "x.lock")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "cuda, torch or rest" in result.stderr
