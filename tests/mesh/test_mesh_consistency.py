"""Cross-resource consistency of each rendered overlay, one test per check."""

from __future__ import annotations

import pytest
from meshcheck import consistency, k8s
from meshcheck.render import OVERLAYS, Doc, of_kind

from autoglm_server.config import Settings


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_autoglm_env_var_is_a_daemon_setting(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """AUTOGLM_X in a manifest must be the env name of a Settings field, or the daemon ignores it."""
    fields = set(Settings.model_fields)
    used = {
        env["name"].removeprefix("AUTOGLM_").lower()
        for dep in of_kind(rendered[overlay], "Deployment")
        for c in k8s.containers(dep)
        for env in c.get("env", [])
        if env["name"].startswith("AUTOGLM_")
    }
    assert used - fields == set()
