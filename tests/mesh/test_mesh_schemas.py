"""Every rendered resource passes the schema the API server would apply: core kinds strictly with
kubernetes-validate, Istio kinds with their CRD's structural schema and CEL rules."""

from __future__ import annotations

import pytest
from meshcheck import core, crd
from meshcheck.render import OVERLAYS, Doc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_validate_strictly(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = [d for d in rendered[overlay] if core.is_core(d)]
    assert docs
    assert [e for d in docs for e in core.validate_core(d)] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_istio_resources_validate_against_their_crds(
    rendered: dict[str, list[Doc]], istio_crds: dict[tuple[str, str], crd.CrdVersion], overlay: str
) -> None:
    docs = [d for d in rendered[overlay] if not core.is_core(d)]
    assert {d["kind"] for d in docs} >= {"PeerAuthentication", "AuthorizationPolicy", "Telemetry"}
    assert [e for d in docs for e in crd.validate_custom_resource(d, istio_crds)] == []


def test_every_istio_kind_shipped_has_a_crd(
    rendered: dict[str, list[Doc]], istio_crds: dict[tuple[str, str], crd.CrdVersion]
) -> None:
    shipped = {(d["apiVersion"], d["kind"]) for docs in rendered.values() for d in docs if not core.is_core(d)}
    assert shipped <= set(istio_crds)
