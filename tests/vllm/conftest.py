"""Tiny models for the vLLM tests, built once per session (no downloads)."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest

# vLLM and the torch and transformers parts it pulls in warn at import (deprecations that are theirs
# to fix, e.g. torch.jit.script); the suite turns warnings into errors. Import them here, once, with
# their import-time warnings ignored; test modules also ignore warnings raised inside those packages
# at run time (THIRD_PARTY_WARNINGS), never ones raised by our code.
_VLLM_MODULES = (
    "vllm",
    "vllm.engine.arg_utils",
    "vllm.v1.engine.async_llm",
    "vllm.platforms",
    "autoglm_server.engine.vllm.engine",
    "autoglm_server.engine.vllm.outputs",
    "autoglm_server.engine.vllm.stats",
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _name in _VLLM_MODULES:
        try:
            importlib.import_module(_name)
        except ImportError:  # no vllm here: the engine tests skip themselves
            break


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vllm.tiny_models import build_llama

    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def glm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vllm.tiny_models import build_glm4v

    return build_glm4v(tmp_path_factory.mktemp("tiny-glm4v"))
