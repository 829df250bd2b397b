"""2D rotary embeddings against timm's RotaryEmbeddingCat / RotaryEmbeddingDinoV3 / RotaryEmbeddingMixed."""

import keras
import numpy as np
import pytest
import torch
from timm.layers import pos_embed_sincos as timm_rope

from keras_vit.layers.rope import AxialRotaryEmbedding, MixedRotaryEmbedding, apply_rotary


def _images(grid, patch=4):
    return np.zeros((1, grid[0] * patch, grid[1] * patch, 3), "float32")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=10000.0),
        dict(temperature=10000.0, ref_feat_shape=(16, 16)),
        dict(temperature=100.0, grid_indexing="xy"),
        dict(temperature=10000.0, grid_offset=1.0, grid_indexing="xy", ref_feat_shape=(24, 24)),
        dict(temperature=100.0, rotate_half=True),
    ],
)
@pytest.mark.parametrize("grid", [(3, 5), (4, 4)])
def test_axial_matches_timm_cat(kwargs, grid):
    ours = AxialRotaryEmbedding(32, patch_size=4, **kwargs)
    theirs = timm_rope.RotaryEmbeddingCat(dim=32, in_pixels=False, feat_shape=list(grid), **kwargs)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(_images(grid))), theirs.get_embed().numpy(), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("grid_indexing", ["ij", "xy"])
@pytest.mark.parametrize("grid", [(3, 5), (16, 16)])
def test_centered_matches_timm_dinov3(grid_indexing, grid):
    ours = AxialRotaryEmbedding(
        64, patch_size=4, temperature=100.0, grid_type="centered", grid_indexing=grid_indexing, rotate_half=True
    )
    theirs = timm_rope.RotaryEmbeddingDinoV3(64, temperature=100.0, grid_indexing=grid_indexing, rotate_half=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(_images(grid))), theirs.get_embed(list(grid)).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("grid", [(3, 5), (4, 4)])
def test_mixed_matches_timm(grid):
    theirs = timm_rope.RotaryEmbeddingMixed(dim=96, depth=2, num_heads=3, temperature=10.0, grid_indexing="xy")
    ours = MixedRotaryEmbedding(32, depth=2, num_heads=3, patch_size=4, temperature=10.0)
    ours.build()
    ours.freqs.assign(theirs.freqs.detach().numpy())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(_images(grid))), theirs.get_embed(list(grid)).detach().numpy(), atol=1e-5
    )


@pytest.mark.parametrize("rotate_half", [False, True])
def test_apply_rotary_matches_timm(rotate_half):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 12, 16)).astype("float32")
    embed = rng.normal(size=(12, 32)).astype("float32")
    expected = timm_rope.apply_rot_embed_cat(torch.from_numpy(x), torch.from_numpy(embed), half=rotate_half)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(apply_rotary(x, embed, rotate_half)), expected.numpy(), atol=1e-6
    )


def test_config_round_trip_and_errors():
    layer = AxialRotaryEmbedding(32, patch_size=14, ref_feat_shape=16, grid_indexing="xy")
    assert AxialRotaryEmbedding.from_config(layer.get_config()).get_config() == layer.get_config()
    mixed = MixedRotaryEmbedding(32, depth=2, num_heads=3)
    assert MixedRotaryEmbedding.from_config(mixed.get_config()).get_config() == mixed.get_config()
    with pytest.raises(ValueError, match="divisible by 4. Received: head_dim=30"):
        AxialRotaryEmbedding(30)
    with pytest.raises(ValueError, match="grid_indexing"):
        AxialRotaryEmbedding(32, grid_indexing="yx")
