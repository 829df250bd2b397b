"""EVA against timm's `Eva`: random weights, perturbed, saved as a timm `.safetensors` file and loaded by keras_vit.

Every tensor of timm's state dict gets noise, so zero-initialised biases or
1e-5 LayerScales hide no mapping error. Models are built at depth 2 (and a
smaller image where that keeps the test fast) on both sides.
"""

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import keras_vit

# (name, image size) : one name per sub-family, and every tiny/small name.
PARITY = [
    ("eva02_tiny_patch14_224", 112),  # EVA-02: packed SwiGLU, separate q/k/v, axial rope with ref grid
    ("eva02_tiny_patch14_336", 112),
    ("eva02_small_patch14_224", 112),
    ("eva02_small_patch14_336", 112),
    ("eva02_base_patch14_224", 112),  # EVA-02 B: SwiGLU with inner norm
    ("eva02_base_patch16_clip_224", 112),  # EVA-02 CLIP: attention inner norm, token pool
    ("eva_giant_patch14_224", 56),  # EVA-01: GELU MLP, learned positions only
    ("vit_small_patch16_dinov3", 64),  # DINOv3: centered rope, rotate-half, registers, LayerScale
    ("vit_small_plus_patch16_dinov3", 64),  # DINOv3 S+: aligned SwiGLU
    ("vit_small_plus_patch16_dinov3_qkvb", 64),
    ("vit_tiny_patch16_dinov3_qkvb", 64),
    ("vit_small_patch16_dinov3_qkvb", 64),
    ("vit_small_patch16_lingbot", 64),
    ("vit_small_patch16_rope_224", 64),  # ROPE-ViT axial, xy grid
    ("vit_small_patch16_rope_ape_224", 64),  # ROPE-ViT axial + absolute embedding without prefix entries
    ("vit_small_patch16_rope_mixed_224", 64),  # ROPE-ViT mixed (learned frequencies)
    ("vit_small_patch16_rope_mixed_ape_224", 64),
    ("vit_medium_patch16_rope_reg1_gap_256", 64),  # timm rope_reg: fused qkv with q/v biases, avg pool
    ("vit_pe_core_tiny_patch16_384", 64),  # PE core: pre-norm, MAP head
    ("vit_pe_core_small_patch16_384", 64),
    ("vit_pe_spatial_tiny_patch16_512", 64),  # PE spatial: no final norm, tokens pooled by mean
    ("vit_pe_spatial_small_patch16_512", 64),
    ("vit_base_patch16_sapiens2", 64),  # Sapiens2: RMSNorm, qk-norm, attention-only LayerScale
]


def _perturbed_checkpoint(timm_model, path):
    generator = torch.Generator().manual_seed(0)
    state = {
        key: value + 0.05 * torch.randn(value.shape, generator=generator)
        for key, value in timm_model.state_dict().items()
    }
    timm_model.load_state_dict(state, strict=False)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _pair(name, image, tmp_path, **overrides):
    spec = keras_vit.model_spec(name)
    kv = spec.arch.get("num_kv_heads")
    extra = {"num_kv_heads": kv[:2]} if isinstance(kv, list) else {}
    timm_extra = {"num_kv_heads": (spec.arch["num_heads"],) * 2} if "sapiens2" in name else extra
    torch.manual_seed(0)
    timm_model = timm.create_model(name, depth=2, img_size=image, **timm_extra, **overrides).eval()
    path = tmp_path / "model.safetensors"
    _perturbed_checkpoint(timm_model, path)
    ours = keras_vit.EVA(name, depth=2, image_size=image, weights=str(path), **extra, **overrides)
    return timm_model, ours


@pytest.mark.parametrize("name,image", PARITY)
def test_logits_match_timm(name, image, tmp_path):
    timm_model, ours = _pair(name, image, tmp_path)
    images = np.random.default_rng(1).normal(size=(2, image, image, 3)).astype("float32")
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(ours(images)), expected, atol=1e-4, rtol=1e-4)


def test_dynamic_image_size_matches_timm_at_a_second_resolution(tmp_path):
    timm_model, ours = _pair("vit_small_patch16_dinov3", 64, tmp_path)
    images = np.random.default_rng(2).normal(size=(1, 96, 80, 3)).astype("float32")
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(ours(images)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("indices", [None, 1, [0]])
def test_nhwc_maps_match_timm_forward_intermediates(indices, tmp_path):
    timm_model, ours = _pair("vit_small_patch16_dinov3", 64, tmp_path)
    images = np.random.default_rng(3).normal(size=(2, 64, 48, 3)).astype("float32")
    with torch.no_grad():
        expected = timm_model.forward_intermediates(
            torch.from_numpy(images.transpose(0, 3, 1, 2)), indices=indices, intermediates_only=True
        )
    maps = ours.forward_intermediates(images, indices=indices, output_fmt="NHWC")["blocks"]
    assert len(maps) == len(expected)
    for got, want in zip(maps, expected):
        assert tuple(got.shape) == (2, 4, 3, 384)
        np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)
