"""The original JAX `.npz` reader against timm's own `.npz` loader (`_load_weights`).

The file is written here from random arrays in the published layout (Flax
names and shapes: Dense kernels `(in, out)`, attention kernels
`(dim, heads, head_dim)`), then read by timm into a PyTorch model and by
keras_vit into ours; outputs must agree.
"""

import timm  # noqa: I001  (torch/timm before TensorFlow)
import numpy as np
import pytest
from timm.models.vision_transformer import _load_weights

import keras_vit
from tests.vit_npz_layout import original_vit_arrays
from tests.parity.vit_parity_utils import TOLERANCE, images, max_diff, timm_forward

DIM, HEADS, MLP, DEPTH, PATCH, SIZE, CLASSES = 64, 4, 256, 2, 8, 32, 10


def original_layout(rng, representation_size=None) -> dict[str, np.ndarray]:
    """Random arrays named and shaped as in `ViT-B_16.npz` / AugReg files (grid 4x4 + class token)."""
    return original_vit_arrays(
        rng,
        dim=DIM,
        depth=DEPTH,
        heads=HEADS,
        mlp=MLP,
        patch=PATCH,
        grid=SIZE // PATCH,
        classes=CLASSES,
        representation_size=representation_size,
        scale=0.1,
    )


def big_vision_stacked(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same weights in big_vision's layout: `params/`, top-level `pos_embedding`, blocks stacked (scan)."""
    renames = {
        "LayerNorm_0": "LayerNorm_0",
        "LayerNorm_2": "LayerNorm_1",
        "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
        "MlpBlock_3": "MlpBlock_0",
    }
    out = {}
    for key, value in w.items():
        if key.startswith("Transformer/encoderblock_0/"):
            rest = key[len("Transformer/encoderblock_0/") :]
            first, tail = rest.split("/", 1)
            stacked = np.stack([w[f"Transformer/encoderblock_{i}/{rest}"] for i in range(DEPTH)])
            out[f"params/Transformer/encoderblock/{renames[first]}/{tail}"] = stacked
        elif not key.startswith("Transformer/encoderblock_"):
            name = "pos_embedding" if key == "Transformer/posembed_input/pos_embedding" else key
            out[f"params/{name}"] = value
    return out


def timm_reference(path):
    model = timm.create_model(
        "vit_base_patch8_224",
        pretrained=False,
        img_size=SIZE,
        depth=DEPTH,
        embed_dim=DIM,
        num_heads=HEADS,
        num_classes=CLASSES,
    ).eval()
    _load_weights(model, str(path))
    return model


def ours(**extra):
    return keras_vit.ViT(
        "vit_base_patch8_224",
        image_size=SIZE,
        depth=DEPTH,
        hidden_dim=DIM,
        num_heads=HEADS,
        mlp_dim=MLP,
        num_classes=CLASSES,
        **extra,
    )


@pytest.mark.parametrize("layout", ["original", "opt_target", "big_vision_stacked"])
def test_npz_matches_timm_npz_loader(layout, tmp_path):
    w = original_layout(np.random.default_rng(0))
    if layout == "opt_target":  # saved from a training state, with optimizer slots beside the params
        w = {**{f"opt/target/{k}": v for k, v in w.items()}, "opt/state/step": np.array(1000)}
    elif layout == "big_vision_stacked":
        w = big_vision_stacked(w)
    path = tmp_path / "ViT-tiny.npz"
    np.savez(path, **w)
    reference = timm_reference(path)
    model = ours()
    report = model.load_pretrained(str(path))
    assert report.format == "npz" and report.flavor == "jax" and report.head == "loaded"
    x = images(2, SIZE)
    ref_logits, ref_blocks = timm_forward(reference, x)
    outputs = model.forward_intermediates(x)
    assert max_diff(outputs["logits"], ref_logits) <= TOLERANCE
    for ours_block, ref_block in zip(outputs["blocks"], ref_blocks):
        assert max_diff(ours_block, ref_block) <= TOLERANCE


def test_npz_pre_logits_layer_is_dense_tanh_on_the_class_token(tmp_path):
    """ImageNet-21k releases carry `pre_logits` (timm drops it); ours loads it as Dense + tanh.

    Checked against the formula logits = tanh(f W_pre + b_pre) W_head + b_head
    on features f of the same file, whose path is verified against timm above.
    """
    w = original_layout(np.random.default_rng(1), representation_size=48)
    path = tmp_path / "ViT-in21k.npz"
    np.savez(path, **w)
    model = ours(representation_size=48)
    model.load_pretrained(str(path))
    with pytest.warns(UserWarning) as record:
        backbone = keras_vit.ViT(
            "vit_base_patch8_224",
            image_size=SIZE,
            depth=DEPTH,
            hidden_dim=DIM,
            num_heads=HEADS,
            mlp_dim=MLP,
            num_classes=0,
            weights=str(path),
        )
    messages = " | ".join(str(r.message) for r in record)
    assert "no pre-logits layer; dropping the checkpoint's ['pre_logits.fc.bias', 'pre_logits.fc.weight']" in messages
    assert "no classifier head; dropping the checkpoint's ['head.bias', 'head.weight'] (10 classes)" in messages
    x = images(2, SIZE)
    features = np.asarray(backbone(x), dtype=np.float64)
    expected = np.tanh(features @ w["pre_logits/kernel"] + w["pre_logits/bias"]) @ w["head/kernel"] + w["head/bias"]
    assert max_diff(model(x), expected.astype("float32")) <= TOLERANCE
