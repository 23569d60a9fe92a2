"""Fixtures of the mesh suite: each overlay rendered once per session, the Istio CRDs loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshcheck import crd, render
from meshcheck.render import OVERLAYS
from meshcheck.tools import KUBECTL, REPO

MESH = REPO / "mesh"


@pytest.fixture(scope="session")
def kubectl() -> str:
    return KUBECTL.require()


@pytest.fixture(scope="session")
def rendered_text(kubectl: str) -> dict[str, str]:
    """overlay name -> the YAML `kubectl kustomize mesh/overlays/NAME` prints."""
    return {name: render.kustomize(kubectl, MESH / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[render.Doc]]:
    return {name: render.parse(text) for name, text in rendered_text.items()}


@pytest.fixture(scope="session")
def istio_crds() -> dict[tuple[str, str], crd.CrdVersion]:
    folder = crd.schemas_dir()
    if not folder.is_dir():
        pytest.skip(f"Istio CRD schemas not found at {folder} (set AUTOGLM_ISTIO_SCHEMAS to their folder)")
    return crd.load_crds(folder)


@pytest.fixture(scope="session")
def mesh_dir() -> Path:
    return MESH
