"""Every overlay renders with kubectl kustomize, and no YAML in mesh/ (source or render) has duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshcheck import k8s
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
        assert res["requests"]["nvidia.com/gpu"] == "1", dep["metadata"]["name"]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-vllm")


def test_gpu_overlay_runs_vllm_on_a_verified_s3_model(rendered: dict[str, list[Doc]]) -> None:
    """vLLM engine, its memory share, prefix caching, shared memory for its workers; the model from
    object storage (stable and canary name different releases), the store's keys as a file from a Secret
    (never in the manifest), the cache on an emptyDir inside the ephemeral-storage limit, a start-up
    window sized for a 20 GB download plus vLLM's load, and one served name for both versions."""
    models = {}
    served_names = set()
    for dep in of_kind(rendered["gpu"], "Deployment"):
        c = k8s.containers(dep)[0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert len(env) == len(c["env"]), "an env var is set twice"
        assert env["AUTOGLM_ENGINE"] == "vllm"
        assert 0 < float(env["AUTOGLM_GPU_MEMORY_FRACTION"]) <= 0.95
        assert env["AUTOGLM_ENABLE_PREFIX_CACHING"] == "true"
        assert int(env["AUTOGLM_TENSOR_PARALLEL_SIZE"]) == int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert int(env["AUTOGLM_MAX_MODEL_LEN"]) > int(env["AUTOGLM_MAX_NEW_TOKENS_LIMIT"])
        models[dep["spec"]["template"]["metadata"]["labels"]["version"]] = env["AUTOGLM_MODEL"]
        served_names.add(env.get("AUTOGLM_SERVED_MODEL_NAME"))
        assert not any(k in env for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        credentials_dir = env["AWS_SHARED_CREDENTIALS_FILE"].rsplit("/", 1)[0]
        assert mounts[credentials_dir]["readOnly"] is True
        assert "secret" in volumes[mounts[credentials_dir]["name"]]
        cache_mount = next(p for p in mounts if env["AUTOGLM_MODEL_CACHE_DIR"].startswith(p + "/"))
        cache = volumes[mounts[cache_mount]["name"]]["emptyDir"]
        assert _gib(cache["sizeLimit"]) >= 40  # a 20 GB snapshot and the next release beside it
        assert _gib(c["resources"]["limits"]["ephemeral-storage"]) > _gib(cache["sizeLimit"])
        assert "/dev/shm" in mounts
        startup = c["startupProbe"]
        window_s = startup["periodSeconds"] * startup["failureThreshold"]
        assert 900 <= window_s <= 3600, window_s
    assert models == {"stable": "s3://models/autoglm-phone-9b/v1", "canary": "s3://models/autoglm-phone-9b/v2"}
    # A request the mesh sends to either version names the same model (else the canary's share 404s).
    assert served_names == {"autoglm-phone-9b"}


def _gib(quantity: str) -> float:
    assert quantity.endswith("Gi"), quantity
    return float(quantity.removesuffix("Gi"))


def test_cpu_canary_overlay_stays_on_cpu(rendered: dict[str, list[Doc]]) -> None:
    for dep in of_kind(rendered["canary"], "Deployment"):
        assert "nvidia.com/gpu" not in dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
