"""The vision tower's patch embedding as a matmul equals the Conv3d it replaces, and shares its weights."""

from __future__ import annotations

import torch
from torch import nn

from autoglm_server.engine import builtin_models
from autoglm_server.engine.builtin.patch_embedding import PatchLinear, use_linear_patch_embedding


def test_the_matmul_equals_the_convolution_on_glm4v_patches() -> None:
    _, model, _ = builtin_models.build("builtin:glm4v-tiny")
    model = model.to(torch.float32).eval()
    patch_embed = model.model.visual.patch_embed
    conv = patch_embed.proj
    torch.manual_seed(0)
    patches = torch.randn(300, conv.in_channels * 2 * 14 * 14)  # as the image processor flattens them
    with torch.no_grad():
        expected = patch_embed(patches)
        assert use_linear_patch_embedding(model)
        got = patch_embed(patches)
    assert isinstance(patch_embed.proj, PatchLinear)
    assert patch_embed.proj.weight is conv.weight  # no copy: the same parameter, the same state_dict key
    assert "model.visual.patch_embed.proj.weight" in model.state_dict()
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_convolution_that_is_not_one_patch_is_left_alone() -> None:
    class Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv3d(3, 8, kernel_size=(2, 14, 14), stride=(1, 7, 7))  # overlapping

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Module()
            self.model.visual = Tower()

    wrapper = Wrapper()
    assert not use_linear_patch_embedding(wrapper)
    assert isinstance(wrapper.model.visual.patch_embed.proj, nn.Conv3d)
    _, text_model, _ = builtin_models.build("builtin:tiny")
    assert not use_linear_patch_embedding(text_model)  # no vision tower at all
