"""The README's canary walkthrough, offline: shift 10 -> 50 -> 100 and roll back, each one command, on a
copy of mesh/ (so the repository's weights are untouched). Each step's render must pass validation."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from meshcheck import consistency, render


@pytest.fixture
def mesh_copy(mesh_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "mesh"
    shutil.copytree(mesh_dir, copy)
    return copy


def _set_weight(mesh: Path, kubectl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(mesh / "set-canary-weight.sh"), *args, "--render"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECTL": kubectl},
    )


def test_shift_and_roll_back(mesh_copy: Path, kubectl: str) -> None:
    for canary in (10, 50, 100, 0):
        proc = _set_weight(mesh_copy, kubectl, str(canary))
        assert proc.returncode == 0, proc.stderr
        vs = render.one(render.parse(proc.stdout), "VirtualService")
        weighted = vs["spec"]["http"][1]
        assert [(d["destination"]["subset"], d["weight"]) for d in weighted["route"]] == [
            ("stable", 100 - canary),
            ("canary", canary),
        ]
        docs = render.parse(render.kustomize(kubectl, mesh_copy / "overlays" / "canary"))
        assert [p for fn in consistency.CHECKS.values() for p in fn(docs)] == []


@pytest.mark.parametrize("bad", ["110", "-5", "ten", ""])
def test_bad_weight_is_refused(mesh_copy: Path, kubectl: str, bad: str) -> None:
    before = (mesh_copy / "overlays" / "canary" / "weights.yaml").read_text()
    proc = _set_weight(mesh_copy, kubectl, bad)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert (mesh_copy / "overlays" / "canary" / "weights.yaml").read_text() == before


def test_repository_weights_are_ten_percent(mesh_dir: Path, kubectl: str) -> None:
    vs = render.one(render.parse(render.kustomize(kubectl, mesh_dir / "overlays" / "canary")), "VirtualService")
    assert [d["weight"] for d in vs["spec"]["http"][1]["route"]] == [90, 10]
