"""Model loading: builtin:tiny, a local directory, and a hub id missing from the cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoglm_server.engine import loader
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
        "from autoglm_server.engine import loader\n"
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
