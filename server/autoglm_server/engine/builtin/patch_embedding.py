"""A vision tower's patch embedding as the matrix product it is, instead of a convolution.

GLM-4.1V (like Qwen2-VL) embeds each patch with a Conv3d whose kernel is exactly one patch
(temporal x height x width) and whose stride equals the kernel, applied to a batch of single patches:
every output is one dot product of a whole patch with each filter, i.e. a linear layer. On CPU,
oneDNN runs that convolution as a general 3-D convolution: 200-260 ms for one 1080x2400 screenshot
(13,416 patches) against 7-35 ms for the same product as a matmul, a fifth of the vision tower's time
(docs/benchmarks.md). The swap keeps the convolution's own weight and bias (same tensors, same
state_dict keys), so nothing is copied and the checkpoint layout does not change; float32 results
agree to about 1e-6 relative (summation order), which the parity tests bound.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class PatchLinear(nn.Module):
    """Stands in for a Conv3d that maps one whole patch to one output vector."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.weight = conv.weight  # [out, channels, t, h, w]: the same Parameter, not a copy
        self.bias = conv.bias

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        flat = patches.reshape(patches.shape[0], -1)
        return nn.functional.linear(flat, self.weight.reshape(self.weight.shape[0], -1), self.bias)


def _is_one_patch_conv(module: nn.Conv3d) -> bool:
    return (
        tuple(module.kernel_size) == tuple(module.stride)
        and tuple(module.padding) == (0, 0, 0)
        and tuple(module.dilation) == (1, 1, 1)
        and module.groups == 1
    )


def use_linear_patch_embedding(model: Any) -> bool:
    """Swap the vision tower's one-patch Conv3d for PatchLinear; False where the model has no such layer."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    patch_embed = getattr(visual, "patch_embed", None)
    conv = getattr(patch_embed, "proj", None)
    if patch_embed is None or not isinstance(conv, nn.Conv3d) or not _is_one_patch_conv(conv):
        return False
    patch_embed.proj = PatchLinear(conv)
    log.debug("vision patch embedding runs as a matmul (kernel %s)", tuple(conv.kernel_size))
    return True
