"""Cross-resource consistency of each rendered overlay, one test per check."""

from __future__ import annotations

import pytest
from meshcheck import consistency
from meshcheck.render import OVERLAYS, Doc


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", sorted(consistency.CHECKS))
def test_overlay_is_consistent(rendered: dict[str, list[Doc]], overlay: str, check: str) -> None:
    assert consistency.CHECKS[check](rendered[overlay]) == []


def test_destination_rules_agree_across_overlays(rendered: dict[str, list[Doc]]) -> None:
    """single and canary keep separate DestinationRule files: their traffic policy must not drift."""
    policies = {
        name: [d["spec"]["trafficPolicy"] for d in docs if d["kind"] == "DestinationRule"]
        for name, docs in rendered.items()
    }
    assert policies["single"] == policies["canary"] == policies["gpu"]
