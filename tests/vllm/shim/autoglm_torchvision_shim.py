"""Test environment only: lets vLLM's GLM-4.1V support run on CPU torch, where torchvision is absent.

Why: PyPI's torchvision wheels are CUDA builds that break `import transformers` under the CPU torch
wheel, and there is no CPU build (not even an sdist), so .ci/vllm-env.sh leaves torchvision out.
Without it, vLLM's glm4_1v module fails to import (it takes `Glm4vImageProcessor` and `smart_resize`
from transformers' torchvision-backed module) and Glm4vProcessor cannot load its video processor
(transformers' AutoVideoProcessor is then a stand-in that raises). This shim, active only when
torchvision cannot be found:
- serves transformers' torchvision-backed image processor modules (`image_processing_glm4v`, and
  `image_processing_qwen2_vl` that it imports from) from their PIL-backend twins
  (`image_processing_pil_*`: the same resizing rule and outputs, computed with PIL and numpy);
- makes AutoVideoProcessor load GLM-4.1V's own video processor class (which constructs without
  torchvision; the tests never send video, and vLLM is started with video limited to 0).
GPU hosts install torchvision with vLLM and never load this file (the .pth line exists only in the
test environment, and the shim checks for torchvision first). It hooks imports lazily, so a Python
start that never imports transformers pays nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

_MODELS = "transformers.models."
_VIDEO_AUTO_MODULE = "transformers.models.auto.video_processing_auto"


class _PilBackendLoader(importlib.abc.Loader):
    """Serves `models.X.image_processing_X` from `models.X.image_processing_pil_X`.

    Every public name is copied, and each `FooImageProcessorPil` is also served as
    `FooImageProcessor`, the name vLLM imports (GLM-4.1V's module also pulls Qwen2-VL's smart_resize).
    """

    def __init__(self, pil_module: str) -> None:
        self._pil_module = pil_module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        pil = importlib.import_module(self._pil_module)
        for name, value in vars(pil).items():
            if name.startswith("_"):
                continue
            setattr(module, name, value)
            if name.endswith("ImageProcessorPil"):
                setattr(module, name.removesuffix("Pil"), value)


class _GlmVideoProcessorLoader:
    """Stands in for AutoVideoProcessor: GLM-4.1V's video processor class, which needs no torchvision."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

        return Glm4vVideoProcessor.from_pretrained(*args, **kwargs)


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._wrapped.exec_module(module)
        module.AutoVideoProcessor = _GlmVideoProcessorLoader  # type: ignore[attr-defined]
        # ProcessorMixin checks a video processor against transformers.VideoProcessorMixin, which is a
        # raising stand-in without torchvision: point the name at the real (torch-free) mixin.
        transformers = sys.modules["transformers"]
        utils = importlib.import_module("transformers.video_processing_utils")
        transformers.VideoProcessorMixin = utils.VideoProcessorMixin  # type: ignore[attr-defined]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, leaf = fullname.rpartition(".")
        if package.startswith(_MODELS) and leaf.startswith("image_processing_") and "_pil_" not in leaf:
            pil_name = f"{package}.image_processing_pil_{leaf.removeprefix('image_processing_')}"
            if importlib.util.find_spec(pil_name) is not None:
                return importlib.util.spec_from_loader(fullname, _PilBackendLoader(pil_name))
        if fullname == _VIDEO_AUTO_MODULE:
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchAfterExec(spec.loader)
            return spec
        return None


def install() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
