"""Sequence-model layers: references, caches, serialization and argument errors."""

import inspect

import keras
import numpy as np
import pytest
import torch
from keras import ops

from keras_vit import layers
from keras_vit.layers.multi_head_attention import causal_mask
from keras_vit.layers.relative_position import relative_position_bucket

LAYERS = {
    "MultiHeadAttention": (lambda: layers.MultiHeadAttention(4), (2, 5, 16)),
    "RelativePositionBias": (lambda: layers.RelativePositionBias(4, bidirectional=False), (2, 5, 16)),
    "TokenEmbedding": (
        lambda: layers.TokenEmbedding(11, 16, scale=False, initializer=keras.initializers.Orthogonal()),
        (2, 5),
    ),
    "LearnedPositionEncoding": (lambda: layers.LearnedPositionEncoding(8), (2, 5, 16)),
    "SequenceEncoderBlock": (lambda: layers.SequenceEncoderBlock(4, 32, norm_first=True), (2, 5, 16)),
    "TransformerDecoderBlock": (lambda: layers.TransformerDecoderBlock(4, 32, activation="gelu"), (2, 5, 16)),
}


def _inputs(shape, rng):
    if len(shape) == 2:
        return rng.integers(0, 11, shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip_and_signature(name, rng):
    make, shape = LAYERS[name]
    layer = make()
    x = _inputs(shape, rng)
    args = (x, x) if name == "TransformerDecoderBlock" else (x,)
    out = layer(*args)
    config = layer.get_config()
    own = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert own <= set(config), f"{name} config lacks {own - set(config)}"
    clone = type(layer).from_config(config)
    clone(*args)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(*args), out, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)
    assert type(restored) is type(layer)


def test_relative_bucket_matches_t5():
    from transformers.models.t5.modeling_t5 import T5Attention  # the reference implementation

    relative = np.arange(-300, 300)[:, None] + np.zeros((1, 1), dtype=int)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            ours = np.asarray(relative_position_bucket(relative, bidirectional, buckets, distance))
            theirs = T5Attention._relative_position_bucket(
                torch.from_numpy(relative), bidirectional=bidirectional, num_buckets=buckets, max_distance=distance
            ).numpy()
            np.testing.assert_array_equal(ours, theirs)


def test_relative_bias_table_and_offset():
    layer = layers.RelativePositionBias(2, bidirectional=True, num_buckets=8, max_distance=16)
    tokens = np.zeros((1, 4, 8), "float32")
    bias = np.asarray(layer(tokens))  # (1, heads, queries, keys)
    table = layer.get_weights()[0]
    buckets = np.asarray(relative_position_bucket(np.arange(4)[None] - np.arange(4)[:, None], True, 8, 16))
    np.testing.assert_allclose(bias[0], np.transpose(table[buckets], (2, 0, 1)), atol=1e-7)
    # One query at position 2 against 4 keys equals row 2 of the full bias (incremental decoding).
    step = np.asarray(layer(tokens[:, :1], key_length=4, query_start=2))
    np.testing.assert_allclose(step[0, :, 0], bias[0, :, 2], atol=1e-7)


def test_cached_self_attention_equals_full_causal(rng):
    layer = layers.MultiHeadAttention(4)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    full = np.asarray(layer(x, use_causal_mask=True))
    cache = ops.zeros((2, 2, 6, 4, 4))
    steps = []
    for i in range(6):
        out, cache = layer(x[:, i : i + 1], use_causal_mask=True, cache=cache, cache_index=i)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_cross_attention_cache_equals_recomputed(rng):
    layer = layers.MultiHeadAttention(2)
    query, memory = rng.normal(size=(2, 3, 8)).astype("float32"), rng.normal(size=(2, 7, 8)).astype("float32")
    mask = np.ones((2, 7), bool)
    mask[1, 5:] = False
    direct = layer(query, memory, attention_mask=mask)
    cached, _ = layer(query, attention_mask=mask, cache=layer.compute_cache(memory))
    np.testing.assert_allclose(cached, direct, atol=1e-6)


def test_attention_masks_padding_and_causality(rng):
    layer = layers.MultiHeadAttention(2)
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    _, weights = layer(
        x, attention_mask=np.array([[True, True, True, False]]), use_causal_mask=True, return_attention_scores=True
    )
    weights = np.asarray(weights)[0]
    allowed = np.tril(np.ones((4, 4), bool)) & np.array([True, True, True, False])
    assert np.all(weights[:, ~allowed] < 1e-6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(causal_mask(2, 4, 1)), [[1, 1, 0, 0], [1, 1, 1, 0]])


def test_tied_embedding_reverse_is_transpose(rng):
    layer = layers.TokenEmbedding(7, 4)
    ids = np.array([[1, 6]])
    np.testing.assert_allclose(layer(ids), layer.get_weights()[0][ids] * 2.0, atol=1e-6)  # sqrt(4)
    vectors = rng.normal(size=(1, 2, 4)).astype("float32")
    np.testing.assert_allclose(layer(vectors, reverse=True), vectors @ layer.get_weights()[0].T, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.MultiHeadAttention(0), r"num_heads.*Received: num_heads=0"),
        (lambda: layers.MultiHeadAttention(2, attention_dropout_rate=1.5), r"attention_dropout_rate=1.5"),
        (lambda: layers.RelativePositionBias(2, num_buckets=2), r"num_buckets.*at least 4"),
        (lambda: layers.RelativePositionBias(2, num_buckets=32, max_distance=4), r"max_distance=4"),
        (lambda: layers.TokenEmbedding(0, 8), r"vocab_size=0"),
        (lambda: layers.LearnedPositionEncoding(-1), r"max_length=-1"),
        (lambda: layers.SequenceEncoderBlock(4, 0), r"mlp_dim=0"),
        (lambda: layers.TransformerDecoderBlock(4, 8, dropout_rate=1.0), r"dropout_rate=1.0"),
    ],
)
def test_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_build_errors(rng):
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        layers.MultiHeadAttention(3)(rng.normal(size=(1, 2, 8)).astype("float32"))
    with pytest.raises(ValueError, match=r"longer than the learned position table \(max_length=4\)"):
        layers.LearnedPositionEncoding(4)(np.zeros((1, 5, 8), "float32"))
    layer = layers.LearnedPositionEncoding(4)
    layer(np.zeros((1, 2, 8), "float32"))
    with pytest.raises(ValueError, match="learned position table"):
        layer(np.zeros((1, 2, 8), "float32"), start_index=3)


def test_rotary_matches_llama_reference(rng):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # the reference implementation

    from keras_vit.layers.relative_position import apply_rotary_embedding

    q, k = rng.normal(size=(2, 5, 3, 8)).astype("float32"), rng.normal(size=(2, 5, 3, 8)).astype("float32")
    positions = np.arange(5) + 4
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
    angles = np.concatenate([positions[:, None] * inv_freq] * 2, axis=-1)  # (length, head_dim), LLaMA layout
    cos, sin = torch.from_numpy(np.cos(angles)[None]).float(), torch.from_numpy(np.sin(angles)[None]).float()
    q_ref, k_ref = apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(k), cos, sin, unsqueeze_dim=2)
    np.testing.assert_allclose(apply_rotary_embedding(q, positions), q_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(apply_rotary_embedding(k, positions), k_ref.numpy(), atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position(rng):
    from keras_vit.layers.relative_position import apply_rotary_embedding

    q, k = rng.normal(size=(1, 1, 1, 8)).astype("float32"), rng.normal(size=(1, 1, 1, 8)).astype("float32")

    def score(m, n):
        return float(
            np.sum(
                np.asarray(apply_rotary_embedding(q, np.array([m])))
                * np.asarray(apply_rotary_embedding(k, np.array([n])))
            )
        )

    np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-4)
    np.testing.assert_allclose(score(0, 0), float(np.sum(q * k)), rtol=1e-5)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3


def test_cached_rotary_self_attention_equals_full_causal(rng):
    layer = layers.MultiHeadAttention(2, rotary_max_wavelength=100.0)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    full = np.asarray(layer(x, use_causal_mask=True))
    cache, steps = ops.zeros((1, 2, 5, 2, 4)), []
    for i in range(5):
        out, cache = layer(x[:, i : i + 1], use_causal_mask=True, cache=cache, cache_index=i)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="rotary_max_wavelength=0"):
        layers.MultiHeadAttention(2, rotary_max_wavelength=0)
    with pytest.raises(ValueError, match="even head dimension"):
        layers.MultiHeadAttention(2, rotary_max_wavelength=100.0)(np.zeros((1, 2, 6), "float32"))
