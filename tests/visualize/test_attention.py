"""Attention weights, per-head maps and rollout against direct numpy computations."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_vit
from keras_vit import visualize


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def numpy_attention(block, tokens, num_heads, qk_norm, epsilon=1e-6):
    """Self-attention weights of a pre-norm block from its variables, in float64 numpy."""
    norm_gamma, norm_beta = (np.asarray(w, np.float64) for w in block.norm1.get_weights())
    kernel, bias = (np.asarray(w, np.float64) for w in block.attn.qkv.get_weights())
    x = layer_norm(np.asarray(tokens, np.float64), norm_gamma, norm_beta, epsilon)
    batch, length, dim = x.shape
    head_dim = dim // num_heads
    qkv = (x @ kernel + bias).reshape(batch, length, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    query, key = qkv[0], qkv[1]
    if qk_norm:
        query = layer_norm(query, *(np.asarray(w, np.float64) for w in block.attn.q_norm.get_weights()), epsilon)
        key = layer_norm(key, *(np.asarray(w, np.float64) for w in block.attn.k_norm.get_weights()), epsilon)
    return softmax(query @ key.transpose(0, 1, 3, 2) / np.sqrt(head_dim))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_weights_equal_numpy_from_layer_weights(qk_norm, randomize):
    model = randomize(
        keras_vit.ViT(
            image_size=(8, 12),
            patch_size=4,
            hidden_dim=16,
            depth=2,
            num_heads=2,
            mlp_dim=16,
            num_register_tokens=1,
            qk_norm=qk_norm,
            num_classes=2,
        )
    )
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype("float32")
    weights = visualize.attention_weights(model, images)
    embedded = keras.Model(model.input, model.get_layer("pos_drop").output)(images)
    blocks = model.forward_intermediates(images)["blocks"]
    inputs = [np.asarray(embedded)] + [np.asarray(b) for b in blocks[:-1]]
    assert len(weights) == 2
    for index, (got, tokens) in enumerate(zip(weights, inputs)):
        assert got.dtype == np.float32 and got.shape == (2, 2, 1 + 1 + 6, 1 + 1 + 6)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
        expected = numpy_attention(model.get_layer(f"block_{index}"), tokens, 2, qk_norm)
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_attention_maps_pick_layer_head_and_token_and_drop_registers(deit_registers, images_16x24):
    weights = visualize.attention_weights(deit_registers, images_16x24)
    prefix = 4  # cls, dist, 2 registers
    maps = visualize.attention_maps(deit_registers, images_16x24, layer=0, head=1)
    np.testing.assert_array_equal(maps, weights[0][:, 1:2, 0, prefix:].reshape(2, 1, 4, 6))
    dist = visualize.attention_maps(deit_registers, images_16x24, layer=-1, token="dist")
    np.testing.assert_array_equal(dist, weights[1][:, :, 1, prefix:].reshape(2, 2, 4, 6))
    mean = visualize.attention_maps(deit_registers, images_16x24, layer=1, token="mean")
    np.testing.assert_allclose(mean, weights[1][:, :, prefix:, prefix:].mean(2).reshape(2, 2, 4, 6), rtol=1e-6)


def numpy_rollout(attention, fusion, discard_ratio):
    """The rollout formula written out one example and one block at a time."""
    batch, _, tokens, _ = attention[0].shape
    results = []
    for b in range(batch):
        rolled = np.eye(tokens)
        for weights in attention:
            fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](weights[b].astype(np.float64), axis=0)
            flat = fused.flatten()
            flat[np.argsort(flat)[: int(discard_ratio * flat.size)]] = 0.0
            fused = flat.reshape(tokens, tokens)
            mixed = 0.5 * fused + 0.5 * np.eye(tokens)
            mixed = mixed / mixed.sum(axis=1, keepdims=True)
            rolled = mixed @ rolled
        results.append(rolled)
    return np.stack(results)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.4])
def test_rollout_equals_numpy_formula(deit_registers, images_16x24, fusion, discard_ratio):
    weights = visualize.attention_weights(deit_registers, images_16x24)
    expected = numpy_rollout(weights, fusion, discard_ratio)
    matrix = visualize.rollout(weights, fusion=fusion, discard_ratio=discard_ratio)
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(matrix.sum(-1), 1.0, atol=1e-5)
    for token, row in (("cls", 0), ("dist", 1)):
        grid = visualize.attention_rollout(
            deit_registers, images_16x24, token=token, fusion=fusion, discard_ratio=discard_ratio
        )
        np.testing.assert_allclose(grid, expected[:, row, 4:].reshape(2, 4, 6), rtol=1e-5, atol=1e-7)


def test_rollout_of_identity_attention_is_identity():
    eye = np.broadcast_to(np.eye(5), (1, 3, 5, 5))
    np.testing.assert_allclose(visualize.rollout([eye, eye, eye]), np.eye(5)[None], atol=1e-7)


def test_upsample_matches_pillow_bilinear():
    maps = np.random.default_rng(0).random((3, 5)).astype("float32")
    got = visualize.upsample(maps, (12, 20))
    expected = np.asarray(Image.fromarray(maps, mode="F").resize((20, 12), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert visualize.upsample(np.ones((2, 2, 3)), (7, 9)).shape == (2, 7, 9)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: visualize.attention_maps(m, x, layer=2), r"`layer` must be an int in \[-2, 1\].*layer=2"),
        (lambda m, x: visualize.attention_maps(m, x, layer=-3), r"layer=-3"),
        (lambda m, x: visualize.attention_maps(m, x, head=2), r"`head` must be None or an int in \[0, 1\]"),
        (lambda m, x: visualize.attention_maps(m, x[0]), r"rank 4.*images\[None\]"),
        (lambda m, x: visualize.attention_rollout(m, x[..., :1]), r"Expected images of shape \(batch, 16, 24, 3\)"),
        (lambda m, x: visualize.attention_rollout(m, x, fusion="sum"), r"`fusion` must be one of.*fusion='sum'"),
        (lambda m, x: visualize.attention_rollout(m, x, discard_ratio=1.0), r"discard_ratio=1.0"),
        (lambda m, x: visualize.attention_rollout(m, x, token="patch"), r"`token` must be one of.*token='patch'"),
    ],
)
def test_bad_input_raises_clear_value_error(deit_registers, images_16x24, call, message):
    with pytest.raises(ValueError, match=message):
        call(deit_registers, images_16x24)


def test_model_without_attention_outputs_is_rejected():
    cnn = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    images = np.zeros((1, 16, 16, 3), "float32")
    for call in (visualize.attention_weights, visualize.attention_rollout, visualize.mean_attention_distance):
        with pytest.raises(ValueError, match=r"no attention outputs"):
            call(cnn, images)


def test_token_rows_need_the_matching_token():
    gap = keras_vit.ViT(
        image_size=8,
        patch_size=4,
        hidden_dim=16,
        depth=1,
        num_heads=2,
        mlp_dim=16,
        class_token=False,
        pooling="gap",
        num_classes=2,
    )
    images = np.zeros((1, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match=r"token='mean'"):
        visualize.attention_rollout(gap, images, token="cls")
    with pytest.raises(ValueError, match=r"distillation_token=True"):
        visualize.attention_maps(gap, images, token="dist")
    assert visualize.attention_rollout(gap, images, token="mean").shape == (1, 2, 2)


def test_mixed_precision_model_gives_float32_weights_that_sum_to_one():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16, num_classes=2)
    images = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    weights = visualize.attention_weights(model, images)[0]
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    stats = visualize.activation_statistics(model, images)
    assert np.all(np.isfinite(stats["token_norms"]))
