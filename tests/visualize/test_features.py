"""Mean attention distance, position-embedding similarity and activation statistics."""

import itertools

import numpy as np
import pytest

import keras_vit
from keras_vit import visualize
from keras_vit.layers.position import sincos_2d_table


def test_mean_attention_distance_equals_explicit_weighted_mean(deit_registers, images_16x24):
    result = visualize.mean_attention_distance(deit_registers, images_16x24)
    weights = visualize.attention_weights(deit_registers, images_16x24)
    rows, cols, patch, prefix = 4, 6, 4, 4
    centres = [((r + 0.5) * patch, (c + 0.5) * patch) for r, c in itertools.product(range(rows), range(cols))]
    expected = np.zeros((2, 2, 2))
    for b, layer, head in itertools.product(range(2), range(2), range(2)):
        total = 0.0
        for i, (yi, xi) in enumerate(centres):
            row = weights[layer][b, head, prefix + i, prefix:].astype(np.float64)
            distances = [np.hypot(yi - yj, xi - xj) for yj, xj in centres]
            total += float(np.dot(row, distances) / row.sum())
        expected[b, layer, head] = total / len(centres)
    np.testing.assert_allclose(result["per_image"], expected, rtol=1e-5)
    np.testing.assert_allclose(result["distance"], expected.mean(0), rtol=1e-5)


def test_attention_distance_in_pixels_for_non_square_patches():
    # Patches 2 high, 4 wide on a 2x3 grid; every query attends to its right neighbour (or itself at the edge).
    layout = visualize.TokenLayout((2, 3), (2, 4), True, False, 0, 1, 1)
    attention = np.zeros((1, 1, 7, 7))
    attention[0, 0, 0, 0] = 1.0
    for r, c in itertools.product(range(2), range(3)):
        i = 1 + r * 3 + c
        attention[0, 0, i, i + 1 if c < 2 else i] = 1.0
    distance = visualize.attention_distance([attention], layout)
    np.testing.assert_allclose(distance, [[[4.0 * 4 / 6]]])  # 4 of 6 queries look 4 pixels right


def test_position_similarity_is_cosine_of_learned_table(deit_registers):
    similarity = visualize.position_embedding_similarity(deit_registers)
    table = np.asarray(deit_registers.get_layer("pos_embed").embeddings)[0, 4:].astype(np.float64)
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    np.testing.assert_allclose(similarity, (unit @ unit.T).reshape(4, 6, 4, 6), atol=1e-6)
    np.testing.assert_allclose(np.einsum("ijij->ij", similarity), 1.0, atol=1e-6)


def test_position_similarity_after_resizing_and_for_sincos(deit_registers):
    resized = deit_registers.with_image_size((24, 16))
    similarity = visualize.position_embedding_similarity(resized)
    assert similarity.shape == (6, 4, 6, 4)
    np.testing.assert_allclose(np.einsum("ijij->ij", similarity), 1.0, atol=1e-6)
    sincos = keras_vit.ViT(
        image_size=(8, 12),
        patch_size=4,
        hidden_dim=16,
        depth=1,
        num_heads=2,
        mlp_dim=16,
        position_embedding="sincos",
        num_classes=0,
    )
    table = sincos_2d_table((2, 3), 16)
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    np.testing.assert_allclose(
        visualize.position_embedding_similarity(sincos), (unit @ unit.T).reshape(2, 3, 2, 3), atol=1e-6
    )
    none = keras_vit.ViT(
        image_size=8,
        patch_size=4,
        hidden_dim=16,
        depth=1,
        num_heads=2,
        mlp_dim=16,
        position_embedding="none",
        num_classes=0,
    )
    with pytest.raises(ValueError, match=r"position_embedding='none'"):
        visualize.position_embedding_similarity(none)


def test_activation_statistics_from_block_outputs(deit_registers, images_16x24):
    stats = visualize.activation_statistics(deit_registers, images_16x24, top_k=3)
    outputs = deit_registers.forward_intermediates(images_16x24)
    blocks = np.stack([np.asarray(b, np.float64) for b in outputs["blocks"]], 1)
    norms = np.sqrt((blocks**2).sum(-1))
    np.testing.assert_allclose(stats["token_norms"], norms, rtol=1e-5)
    np.testing.assert_allclose(stats["patch_norms"], norms[:, :, 4:].reshape(2, 2, 4, 6), rtol=1e-5)
    np.testing.assert_allclose(stats["prefix_norm"], norms[:, :, :4].mean(0), rtol=1e-5)
    channel = np.abs(blocks).mean(axis=(0, 2))
    for layer in range(2):
        assert set(stats["top_channels"][layer]) == set(np.argsort(channel[layer])[-3:])
    np.testing.assert_allclose(stats["top_values"], np.sort(channel, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert int(stats["most_active_block"]) == int(np.argmax(norms[:, :, 4:].mean(axis=(0, 2))))
    with pytest.raises(ValueError, match=r"top_k=0"):
        visualize.activation_statistics(deit_registers, images_16x24, top_k=0)
