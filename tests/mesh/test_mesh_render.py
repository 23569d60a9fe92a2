"""Every overlay renders with kubectl kustomize, and no YAML in mesh/ (source or render) has duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshcheck.render import OVERLAYS, Doc, of_kind
from yamllint import linter
from yamllint.config import YamlLintConfig

# Errors only for what changes meaning (duplicate keys, bad syntax, tabs); layout is left to taste.
YAMLLINT = YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  key-duplicates: enable\n"
    "  line-length: {max: 120}\n"
    "  document-start: disable\n"
    "  comments: {min-spaces-from-content: 1}\n"
    "  comments-indentation: disable\n"
    "  truthy: {check-keys: false}\n"
    "  indentation: {indent-sequences: whatever}\n"
)


def _lint(text: str) -> list[str]:
    return [f"{p.line}:{p.column} {p.rule}: {p.desc}" for p in linter.run(text, YAMLLINT) if p.level == "error"]


def test_each_overlay_renders_the_expected_kinds(rendered: dict[str, list[Doc]]) -> None:
    for name in OVERLAYS:
        kinds = {d["kind"] for d in rendered[name]}
        assert {"Namespace", "Deployment", "Service", "DestinationRule", "VirtualService"} <= kinds, name
    assert len(list(of_kind(rendered["single"], "Deployment"))) == 1
    assert len(list(of_kind(rendered["canary"], "Deployment"))) == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_yaml_lints_clean(rendered_text: dict[str, str], overlay: str) -> None:
    assert _lint(rendered_text[overlay]) == []


def test_source_yaml_lints_clean(mesh_dir: Path) -> None:
    problems = {str(p): _lint(p.read_text()) for p in sorted(mesh_dir.rglob("*.yaml"))}
    assert {k: v for k, v in problems.items() if v} == {}


def test_yamllint_catches_a_duplicate_key() -> None:
    assert any("key-duplicates" in p for p in _lint("a:\n  b: 1\n  b: 2\n"))


def test_gpu_overlay_requests_a_gpu(rendered: dict[str, list[Doc]]) -> None:
    for dep in of_kind(rendered["gpu"], "Deployment"):
        res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "1", dep["metadata"]["name"]
        assert "-cuda" in dep["spec"]["template"]["spec"]["containers"][0]["image"]
    for dep in of_kind(rendered["canary"], "Deployment"):
        assert "nvidia.com/gpu" not in dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
