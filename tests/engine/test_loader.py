"""Model loading: builtin:tiny, a local directory, and a hub id missing from the cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoglm_server.engine.builtin import loader
from autoglm_server.engine.settings import EngineSettings
from tests.engine.conftest import tiny


def test_builtin_tiny_is_reproducible_and_described() -> None:
    first = loader.load(EngineSettings(dtype="float32", device="cpu"))
    second = loader.load(EngineSettings(dtype="float32", device="cpu"))
    desc = first.description
    assert desc.random_weights
    assert (desc.model_id, desc.architecture, desc.dtype, desc.device) == (
        "builtin:tiny",
        "LlamaForCausalLM",
        "float32",
        "cpu",
    )
    assert desc.eos_token_ids == (first.tokenizer.eos_token_id,)
    assert desc.vocab_size == len(first.tokenizer) >= 259
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_auto_dtype_follows_the_hardware() -> None:
    expected = torch.bfloat16 if loader.cpu_has_fast_bf16() else torch.float32
    assert loader.resolve_dtype("auto", torch.device("cpu")) == expected
    assert loader.resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_a_local_directory_loads(tmp_path: Path) -> None:
    source = tiny("qwen2")
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    loaded = loader.load(EngineSettings(model=str(tmp_path), dtype="float32", device="cpu"))
    assert loaded.description.architecture == "Qwen2ForCausalLM"
    assert not loaded.description.random_weights
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, source.model(ids).logits)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(loader.ModelLoadError, match="does not exist"):
        loader.load(EngineSettings(model=str(tmp_path / "nope"), device="cpu"))


def test_hub_id_not_in_the_cache_fails_fast_with_one_clear_message(tmp_path: Path) -> None:
    code = (
        "from autoglm_server.engine.builtin import loader\n"
        "from autoglm_server.engine.settings import EngineSettings\n"
        "try:\n"
        "    loader.load(EngineSettings(model='no-such-org/no-such-model', device='cpu'))\n"
        "except loader.ModelLoadError as exc:\n"
        "    print(exc)\n"
    )
    env = {"HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "no-such-org/no-such-model" in out.stdout
    assert "hf download no-such-org/no-such-model" in out.stdout
    assert "Traceback" not in out.stderr


class _Weights:
    """Just the parameter count of a model (meta tensors: no memory), for the thread rule."""

    def __init__(self, count: int) -> None:
        self._tensor = torch.empty(count, device="meta")

    def parameters(self) -> list[torch.Tensor]:
        return [self._tensor]


@pytest.mark.parametrize(
    ("parameters", "cpus", "expected"),
    [
        (3_542_784, 2, 1),  # builtin:tiny on this machine: the second core is left to the event loop
        (113_663_232, 2, 2),  # builtin:small: enough work per step for both cores
        (113_663_232, 16, 3),  # ... and not more threads than its work pays for
        (3_542_784, 1, 1),
        (9_000_000_000, 16, 16),  # a 9B model takes every core
    ],
)
def test_auto_torch_threads_follow_the_models_work_and_the_cpus(
    monkeypatch: pytest.MonkeyPatch, parameters: int, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(loader, "usable_cpus", lambda: cpus)
    assert loader.resolve_torch_threads(0, _Weights(parameters), torch.device("cpu")) == expected
    assert loader.resolve_torch_threads(5, _Weights(parameters), torch.device("cpu")) == 5  # the flag wins


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "250000 100000\n"}, 3),  # cgroup v2, limits.cpu 2.5 -> 3
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_cpu_limit_caps_the_usable_cpus(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert loader.cgroup_cpu_quota(tmp_path) == expected
    if expected is not None:
        assert loader.usable_cpus(tmp_path) <= expected
