"""keras_vit against timm (PyTorch, CPU) on randomly initialised, shrunk variants of registered models.

Each case builds the timm model, saves its state dict as safetensors (as timm
publishes weights), loads the file into the keras_vit model of the same name
and compares logits and every block's tokens on one batch.
"""

import timm  # noqa: I001  (torch/timm before TensorFlow; see tests/conftest.py)
import numpy as np
import pytest
import torch
from timm.models.vision_transformer import checkpoint_filter_fn

import keras_vit
from keras_vit.weights import save_weights
from tests.parity.vit_parity_utils import TOLERANCE, images, max_diff, randomize_, save_state, timm_forward

TINY_TIMM = dict(depth=2, embed_dim=64, num_heads=4, num_classes=7)
TINY_OURS = dict(depth=2, hidden_dim=64, num_heads=4, mlp_dim=256, num_classes=7)
CASES = {
    # name: image size (grid = size / patch)
    "vit_base_patch16_224": 64,  # plain ViT, class token, 4x4 grid
    "vit_small_patch32_384": 96,  # another patch and image size, 3x3 grid
    "deit_tiny_distilled_patch16_224": 48,  # DeiT: dist_token, head_dist, averaged heads
    "vit_small_patch14_reg4_dinov2": 56,  # 4 registers, LayerScale, no_embed_class
    "vit_base_patch16_reg4_gap_256": 64,  # no class token, registers, gap + fc_norm
}


def build_pair(name: str, size: int, tmp_path, seed: int = 0):
    reference = randomize_(timm.create_model(name, pretrained=False, img_size=size, **TINY_TIMM), seed)
    path = save_state(reference, tmp_path / f"{name}.safetensors")
    ours = keras_vit.ViT(name, image_size=size, weights=path, **TINY_OURS)
    return reference, ours


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_block_features_match_timm(name, tmp_path):
    size = CASES[name]
    reference, ours = build_pair(name, size, tmp_path)
    x = images(2, size)
    ref_logits, ref_blocks = timm_forward(reference, x)
    outputs = ours.forward_intermediates(x)
    assert max_diff(ours(x), ref_logits) <= TOLERANCE
    assert max_diff(outputs["logits"], ref_logits) <= TOLERANCE
    assert len(outputs["blocks"]) == len(ref_blocks) == 2
    for ours_block, ref_block in zip(outputs["blocks"], ref_blocks):
        assert max_diff(ours_block, ref_block) <= TOLERANCE
    assert np.abs(ref_logits).max() > 0.1  # the comparison is not between near-zero outputs


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2"])
def test_saved_safetensors_load_strictly_into_timm(name, tmp_path):
    """Weights travel back: keras_vit -> safetensors (timm keys) -> timm, equal outputs."""
    size = CASES[name]
    _, ours = build_pair(name, size, tmp_path, seed=3)
    path = save_weights(ours, str(tmp_path / "back.safetensors"))
    fresh = timm.create_model(name, pretrained=False, img_size=size, **TINY_TIMM).eval()
    from safetensors.torch import load_file

    result = fresh.load_state_dict(load_file(path), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = images(2, size, seed=1)
    assert max_diff(ours(x), timm_forward(fresh, x)[0]) <= TOLERANCE


@pytest.mark.parametrize(
    "name,old,new",
    [("vit_base_patch16_224", 64, 96), ("vit_small_patch14_reg4_dinov2", 56, 84), ("vit_base_patch16_224", 96, 64)],
)
def test_resolution_change_matches_timm_resampling(name, old, new, tmp_path):
    """224 -> 384-style fine-tuning resolution change (small grids): 4x4 -> 6x6, and shrinking 6x6 -> 4x4.

    timm resamples with `checkpoint_filter_fn` (bicubic, antialiased); keras_vit
    with `resample_position_embeddings`. Stated tolerance: 1e-5 on the table,
    1e-4 on logits (float32 torch vs float64 NumPy interpolation).
    """
    reference = randomize_(timm.create_model(name, pretrained=False, img_size=old, **TINY_TIMM), seed=5)
    path = save_state(reference, tmp_path / "low.safetensors")
    resized = timm.create_model(name, pretrained=False, img_size=new, **TINY_TIMM).eval()
    resized.load_state_dict(checkpoint_filter_fn(reference.state_dict(), resized), strict=True)
    with pytest.warns(UserWarning, match=r"Resampling the position embedding"):
        ours = keras_vit.ViT(name, image_size=new, weights=path, **TINY_OURS)
    table = ours.get_layer("pos_embed").embeddings.numpy()
    assert max_diff(table, resized.pos_embed.detach().numpy()) <= 1e-5
    x = images(2, new, seed=2)
    assert max_diff(ours(x), timm_forward(resized, x)[0]) <= TOLERANCE


def test_head_replaced_for_new_class_count_keeps_backbone(tmp_path):
    name, size = "vit_base_patch16_224", 64
    reference = randomize_(timm.create_model(name, pretrained=False, img_size=size, **TINY_TIMM), seed=1)
    path = save_state(reference, tmp_path / "w.safetensors")
    with pytest.warns(UserWarning, match=r"Classifier head not loaded: .*head.bias \(7\) vs \(3\)"):
        ours = keras_vit.ViT(name, image_size=size, weights=path, **dict(TINY_OURS, num_classes=3))
    x = images(2, size)
    with torch.no_grad():
        reference.reset_classifier(0)
        ref_features = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert max_diff(ours.feature_extractor()(x), ref_features) <= TOLERANCE
    np.testing.assert_array_equal(ours.get_layer("head").kernel.numpy(), 0.0)  # fresh head (zeros init)


def test_deit_both_heads_match_timm(tmp_path):
    name, size = "deit_tiny_distilled_patch16_224", 48
    reference, ours = build_pair(name, size, tmp_path, seed=2)
    x = images(2, size)
    reference.set_distilled_training(True)
    reference.train()  # timm returns (cls, dist) logits separately only in distilled training mode
    with torch.no_grad():
        cls_logits, dist_logits = (t.numpy() for t in reference(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    heads = ours.heads_model()(x)
    assert max_diff(heads["cls"], cls_logits) <= TOLERANCE
    assert max_diff(heads["dist"], dist_logits) <= TOLERANCE


@pytest.mark.slow
def test_vit_base_patch16_224_full_size_matches_timm(tmp_path):
    """The real ViT-B/16 at 224 (86.6M parameters), random weights, one batch."""
    name = "vit_base_patch16_224"
    reference = randomize_(timm.create_model(name, pretrained=False), seed=7)
    with torch.no_grad():  # keep activations O(1) at full depth and width
        for parameter in reference.parameters():
            if parameter.ndim == 2:
                parameter.mul_(0.2)
    path = save_state(reference, tmp_path / "b16.safetensors")
    ours = keras_vit.ViT(name, weights=path)
    assert ours.count_params() == 86_567_656
    x = images(2, 224)
    ref_logits, ref_blocks = timm_forward(reference, x)
    outputs = ours.forward_intermediates(x)
    assert max_diff(outputs["logits"], ref_logits) <= TOLERANCE
    for ours_block, ref_block in zip(outputs["blocks"], ref_blocks):
        assert max_diff(ours_block, ref_block) <= TOLERANCE * max(1.0, float(np.abs(ref_block).max()) / 10)
