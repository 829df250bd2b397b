"""Layer tests: numerics against torch / exact formulas, serialization, argument errors."""

import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from keras_vit import layers as L


def tiny_tokens(rng, batch=2, length=5, dim=8):
    return rng.standard_normal((batch, length, dim)).astype("float32")


LAYER_CASES = [
    (L.PatchEmbedding, dict(patch_size=4, hidden_dim=8), (2, 8, 12, 3)),
    (L.PrefixTokens, dict(class_token=True, distillation_token=True, num_register_tokens=2), (2, 6, 8)),
    (L.PositionEmbedding, dict(grid_size=(2, 3), num_prefix_tokens=1), (2, 7, 8)),
    (L.SinusoidalPositionEncoding, dict(), (2, 6, 8)),
    (L.SinCosPositionEmbedding2D, dict(grid_size=(2, 3), num_prefix_tokens=1), (2, 7, 8)),
    (L.MultiHeadSelfAttention, dict(num_heads=2, qk_norm=True), (2, 6, 8)),
    (L.Mlp, dict(hidden_units=16), (2, 6, 8)),
    (L.Mlp, dict(hidden_units=16, activation="quick_gelu", use_bias=False, inner_norm="rms"), (2, 6, 8)),
    (L.GatedMlp, dict(hidden_units=12, inner_norm="layer"), (2, 6, 8)),
    (L.GatedMlp, dict(hidden_units=12, packed=True, output_units=4), (2, 6, 8)),
    (L.RMSNorm, dict(epsilon=1e-5), (2, 6, 8)),
    (L.DropPath, dict(rate=0.1), (2, 6, 8)),
    (L.LayerScale, dict(init_values=1e-5), (2, 6, 8)),
    (L.LayerNorm, dict(epsilon=1e-6), (2, 6, 8)),
    (L.TransformerEncoderBlock, dict(num_heads=2, mlp_dim=16, layer_scale_init=0.1, qk_norm=True), (2, 6, 8)),
    (L.TokenPooling, dict(mode="gap", num_prefix_tokens=1), (2, 6, 8)),
    (
        L.MultiHeadSelfAttention,
        dict(num_heads=2, qk_norm=True, norm="rms", inner_norm=True, proj_bias=False),
        (2, 6, 8),
    ),
    (L.DiffAttention, dict(num_heads=2, qk_norm=True, inner_norm=True, depth=3), (2, 6, 8)),
    (L.DiffAttention, dict(num_heads=2, dual_lambda=True), (2, 6, 8)),
    (
        L.TransformerEncoderBlock,
        dict(num_heads=2, mlp_dim=16, mlp_kind="swiglu_packed", norm="rms", attn_inner_norm=True, mlp_inner_norm=True),
        (2, 6, 8),
    ),
    (
        L.TransformerEncoderBlock,
        dict(num_heads=2, mlp_dim=16, attn_layer="diff", depth=2, mlp_kind="swiglu"),
        (2, 6, 8),
    ),
    (L.ResPostBlock, dict(num_heads=2, mlp_dim=16, layer_scale_init=0.1), (2, 6, 8)),
    (L.ParallelThingsBlock, dict(num_heads=2, mlp_dim=16, num_parallel=3, layer_scale_init=0.1), (2, 6, 8)),
    (
        L.ParallelScalingBlock,
        dict(num_heads=2, mlp_dim=20, qkv_bias=False, qk_norm=True, layer_scale_init=0.1),
        (2, 6, 8),
    ),
    (L.ParallelScalingBlock, dict(num_heads=2, mlp_dim=20, fuse_out_proj=True), (2, 6, 8)),
    (
        L.DiffParallelScalingBlock,
        dict(num_heads=2, mlp_dim=20, qkv_bias=False, depth=1, layer_scale_init=0.1),
        (2, 6, 8),
    ),
    (L.AttentionPoolLatent, dict(num_heads=2, num_latents=2, norm="rms", activation="gelu_tanh"), (2, 6, 8)),
]


@pytest.mark.parametrize("cls,kwargs,shape", LAYER_CASES, ids=[c[0].__name__ for c in LAYER_CASES])
def test_config_matches_constructor_and_round_trips(cls, kwargs, shape, rng):
    layer = cls(**kwargs)
    x = rng.standard_normal(shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    config = layer.get_config()
    own = set(config) - set(keras.layers.Layer(name="x").get_config())
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    if cls is L.LayerNorm:  # inherits Keras' constructor, whose config also holds its deprecated kwarg
        params.add("rms_scaling")
    assert own == params, "config and constructor drift"
    clone = cls.from_config(config)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), y, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs,shape", LAYER_CASES, ids=[c[0].__name__ for c in LAYER_CASES])
def test_keras_file_round_trip_safe_mode(cls, kwargs, shape, rng, tmp_path):
    x = rng.standard_normal(shape).astype("float32")
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, cls(**kwargs)(inputs))
    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_patch_embedding_is_linear_map_of_flattened_patches(rng):
    layer = L.PatchEmbedding(patch_size=(2, 3), hidden_dim=5)
    images = rng.standard_normal((1, 4, 6, 2)).astype("float32")
    tokens = keras.ops.convert_to_numpy(layer(images))
    kernel, bias = [w.numpy() for w in layer.projection.weights]
    patches = images.reshape(1, 2, 2, 2, 3, 2).transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 12)
    np.testing.assert_allclose(tokens, patches @ kernel.reshape(12, 5) + bias, atol=1e-5)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_patch_embedding_train_graph_matmul_matches_keras_conv(policy, rng):
    """Under a gradient tape TensorFlow graphs project flattened patches with one matmul: same values and
    gradients as Keras' own strided Conv2D on the same weights (no convolution is traced there)."""
    keras.mixed_precision.set_global_policy(policy)
    layer = L.PatchEmbedding(patch_size=(2, 3), hidden_dim=5)
    layer.build((2, 4, 9, 3))
    reference = keras.layers.Conv2D(5, (2, 3), strides=(2, 3))
    reference.build((2, 4, 9, 3))
    reference.set_weights(layer.projection.get_weights())
    images = tf.constant(rng.standard_normal((2, 4, 9, 3)).astype("float32"))
    upstream = tf.constant(rng.standard_normal((2, 6, 5)).astype("float32"))

    def value_and_grads(project, weights):
        with tf.GradientTape() as tape:
            tokens = tf.cast(project(images), "float32")
            loss = tf.reduce_sum(tokens * upstream)
        return [tokens] + tape.gradient(loss, weights)

    ours = tf.function(lambda: value_and_grads(layer, layer.projection.trainable_variables))
    keras_conv = tf.function(
        lambda: value_and_grads(lambda x: tf.reshape(reference(x), (2, 6, 5)), reference.trainable_variables)
    )
    tolerance = 1e-5 if policy == "float32" else 3e-2
    for got, want in zip(ours(), keras_conv()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tolerance, atol=tolerance)
    traced = {op.type for op in ours.get_concrete_function().graph.get_operations()}
    assert not any(op.startswith("Conv2D") for op in traced), traced


def test_attention_matches_torch_sdpa_with_mask(rng):
    x = tiny_tokens(rng, batch=2, length=6, dim=12)
    layer = L.MultiHeadSelfAttention(num_heads=3)
    mask = np.ones((2, 6), bool)
    mask[1, 4:] = False
    out, weights = layer(x, attention_mask=mask, return_attention_scores=True)
    kernel, bias = layer.qkv.kernel.numpy(), layer.qkv.bias.numpy()
    qkv = torch.from_numpy(x @ kernel + bias).reshape(2, 6, 3, 3, 4).permute(2, 0, 3, 1, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], attn_mask=torch.from_numpy(mask)[:, None, None, :]
    )
    ref = ref.permute(0, 2, 1, 3).reshape(2, 6, 12).numpy() @ layer.proj.kernel.numpy() + layer.proj.bias.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref, atol=1e-5)
    weights = keras.ops.convert_to_numpy(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[1, :, :, 4:] < 1e-8)


def test_attention_qk_norm_normalises_queries_and_keys(rng):
    x = tiny_tokens(rng, length=4, dim=8)
    layer = L.MultiHeadSelfAttention(num_heads=2, qk_norm=True, qkv_bias=False)
    _, weights = layer(x, return_attention_scores=True)
    qkv = (x @ layer.qkv.kernel.numpy()).reshape(2, 4, 3, 2, 4).transpose(2, 0, 3, 1, 4)

    def norm(t):
        return (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)

    logits = norm(qkv[0]) @ norm(qkv[1]).swapaxes(-1, -2) / 2.0
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), expected, atol=1e-5)


def test_gelu_is_exact_erf_gelu():
    x = np.linspace(-6, 6, 101).astype("float32")
    ref = torch.nn.functional.gelu(torch.from_numpy(x), approximate="none").numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(L.gelu_erf(x)), ref, atol=1e-6)


def _layer_norm_gradients(norm, x, upstream, mode):
    """(outputs, d inputs, d gamma or None, d beta or None) of `sum(norm(x) * upstream)` run eagerly,
    in a `tf.function` (the hand-written backward) or under XLA (autodiff)."""
    params = [w for w in (norm.gamma, norm.beta) if w is not None]

    def run(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = norm(inputs)
            loss = tf.reduce_sum(outputs * upstream)
        return outputs, tape.gradient(loss, [inputs] + [w.value for w in params])

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    outputs, grads = run(tf.constant(x))
    grads = iter([g.numpy() for g in grads])
    grad_x = next(grads)
    return (
        outputs.numpy(),
        grad_x,
        next(grads) if norm.gamma is not None else None,
        next(grads) if norm.beta is not None else None,
    )


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("shape", [(6, 16), (2, 5, 16), (2, 3, 5, 16)])
def test_layer_norm_matches_torch_in_value_and_gradient(shape, mode):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1.5).astype("float32")
    gamma, beta = rng.standard_normal(16).astype("float32"), rng.standard_normal(16).astype("float32")
    upstream = rng.standard_normal(shape).astype("float32")
    norm = L.LayerNorm(epsilon=1e-6)
    norm.build(shape)
    norm.set_weights([gamma, beta])
    results = _layer_norm_gradients(norm, x, upstream, mode)

    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out = torch.nn.functional.layer_norm(tx, (16,), tg, tb, eps=1e-6)
    (out * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(results[0], out.detach().numpy(), atol=2e-5)
    for ours, ref in zip(results[1:], (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_layer_norm_gradient_without_gamma_or_beta_matches_torch(center, scale):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 4, 8)) * 2 - 1).astype("float32")
    upstream = rng.standard_normal((3, 4, 8)).astype("float32")
    norm = L.LayerNorm(epsilon=1e-5, center=center, scale=scale)
    norm.build(x.shape)
    if scale:
        norm.gamma.assign(rng.standard_normal(8).astype("float32"))
    if center:
        norm.beta.assign(rng.standard_normal(8).astype("float32"))
    outputs, grad_x, grad_gamma, grad_beta = _layer_norm_gradients(norm, x, upstream, "graph")

    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(norm.gamma.numpy(), requires_grad=True) if scale else None
    tb = torch.tensor(norm.beta.numpy(), requires_grad=True) if center else None
    out = torch.nn.functional.layer_norm(tx, (8,), tg, tb, eps=1e-5)
    (out * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(outputs, out.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    for ours, ref in ((grad_gamma, tg), (grad_beta, tb)):
        assert (ours is None) == (ref is None)
        if ref is not None:
            np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_layer_norm_hand_written_backward_is_used_outside_xla_only():
    from keras_vit.layers._fast import tensorflow_op_by_op

    seen = []

    def probe(x):
        seen.append(tensorflow_op_by_op())
        return x

    tf.function(probe)(tf.ones(2))
    tf.function(probe, jit_compile=True)(tf.ones(2))
    assert seen == [True, False]


def test_layer_norm_keeps_keras_behaviour_for_other_settings():
    x = np.random.default_rng(1).standard_normal((2, 4, 6)).astype("float32")
    for kwargs in (dict(axis=1), dict(center=False), dict(scale=False), dict(center=False, scale=False)):
        ours, ref = L.LayerNorm(**kwargs), keras.layers.LayerNormalization(**kwargs)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=1e-5, err_msg=str(kwargs)
        )
    mixed = L.LayerNorm(dtype="mixed_bfloat16")
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
        keras.ops.convert_to_numpy(L.LayerNorm()(x)),
        atol=3e-2,
    )


def test_sinusoidal_encoding_matches_paper_formula():
    x = np.zeros((1, 7, 6), "float32")
    pe = keras.ops.convert_to_numpy(L.SinusoidalPositionEncoding()(x, start_index=3))[0]
    for pos in range(7):
        for i in range(3):
            angle = (pos + 3) / 10000 ** (2 * i / 6)
            assert math.isclose(pe[pos, 2 * i], math.sin(angle), abs_tol=1e-5)
            assert math.isclose(pe[pos, 2 * i + 1], math.cos(angle), abs_tol=1e-5)


def test_sincos_2d_first_half_encodes_columns_second_half_rows():
    table = keras.ops.convert_to_numpy(L.SinCosPositionEmbedding2D((2, 3), num_prefix_tokens=1)(np.zeros((1, 7, 8))))[0]
    assert np.all(table[0] == 0)
    grid = table[1:].reshape(2, 3, 8)
    np.testing.assert_allclose(grid[0, :, :4], grid[1, :, :4])  # same column -> same first half
    np.testing.assert_allclose(grid[:, 0, 4:], grid[:, 1, 4:])  # same row -> same second half
    np.testing.assert_allclose(grid[1, 2, 4:], [math.sin(1), math.sin(1e-2), math.cos(1), math.cos(1e-2)], atol=1e-6)


@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((24, 24), (14, 14)), ((7, 5), (3, 9))])
def test_resampling_matches_torch_bicubic_antialias(old, new, rng):
    table = rng.standard_normal((1, 1 + old[0] * old[1], 4)).astype("float32")
    ours = L.resample_position_embeddings(table, old, new, num_prefix_tokens=1)
    grid = torch.from_numpy(table[:, 1:]).reshape(1, *old, 4).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=new, mode="bicubic", antialias=True, align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 4).numpy()
    np.testing.assert_array_equal(ours[:, :1], table[:, :1])
    np.testing.assert_allclose(ours[:, 1:], ref, atol=1e-5)


def test_resampling_to_same_grid_is_identity(rng):
    table = rng.standard_normal((1, 17, 4)).astype("float32")
    np.testing.assert_array_equal(L.resample_position_embeddings(table, (4, 4), (4, 4), 1), table)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    layer = L.DropPath(rate=0.25, seed=1)
    x = np.ones((4000, 3, 2), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert abs(per_sample.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_encoder_block_matches_manual_pre_norm_composition(rng):
    x = tiny_tokens(rng, length=5, dim=8)
    block = L.TransformerEncoderBlock(num_heads=2, mlp_dim=16, layer_scale_init=0.5)
    y = keras.ops.convert_to_numpy(block(x))
    h = x + keras.ops.convert_to_numpy(block.ls1(block.attn(block.norm1(x))))
    expected = h + keras.ops.convert_to_numpy(block.ls2(block.mlp(block.norm2(h))))
    np.testing.assert_allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: L.MultiHeadSelfAttention(num_heads=0), "num_heads=0"),
        (lambda: L.MultiHeadSelfAttention(num_heads=2, attention_dropout_rate=-0.1), "attention_dropout_rate=-0.1"),
        (lambda: L.DropPath(rate=1.5), "rate=1.5"),
        (lambda: L.TransformerEncoderBlock(num_heads=2, mlp_dim=8, drop_path_rate=-0.2), "drop_path_rate=-0.2"),
        (lambda: L.PatchEmbedding(patch_size=0, hidden_dim=8), "patch_size=0"),
        (lambda: L.LayerScale(init_values=0), "init_values=0"),
        (lambda: L.PrefixTokens(num_register_tokens=-1), "num_register_tokens=-1"),
        (lambda: L.TokenPooling(mode="max"), "mode='max'"),
        (lambda: L.Mlp(hidden_units=8, activation="swish"), "activation='swish'"),
        (lambda: L.Mlp(hidden_units=8, inner_norm="batch"), "inner_norm='batch'"),
        (lambda: L.GatedMlp(hidden_units=0), "hidden_units=0"),
        (lambda: L.GatedMlp(hidden_units=8, activation="tanh"), "activation='tanh'"),
        (lambda: L.RMSNorm(epsilon=-1.0), "epsilon=-1.0"),
        (lambda: L.AttentionPoolLatent(num_heads=2, pool="max"), "pool='max'"),
        (lambda: L.MultiHeadSelfAttention(num_heads=2, norm="batch"), "norm='batch'"),
        (lambda: L.TransformerEncoderBlock(num_heads=2, mlp_dim=8, mlp_kind="moe"), "mlp_kind='moe'"),
        (lambda: L.TransformerEncoderBlock(num_heads=2, mlp_dim=9, mlp_kind="swiglu_packed"), "mlp_dim=9"),
        (lambda: L.TransformerEncoderBlock(num_heads=2, mlp_dim=8, attn_layer="linear"), "attn_layer='linear'"),
        (lambda: L.TransformerEncoderBlock(num_heads=2, mlp_dim=8, activation="tanh"), "activation='tanh'"),
        (lambda: L.ResPostBlock(num_heads=2, mlp_dim=8, depth=-1), "depth=-1"),
        (lambda: L.ParallelThingsBlock(num_heads=2, mlp_dim=8, num_parallel=0), "num_parallel=0"),
        (lambda: L.ParallelScalingBlock(num_heads=2, mlp_dim=0), "mlp_dim=0"),
        (lambda: L.ParallelScalingBlock(num_heads=3, mlp_dim=8)(np.zeros((1, 2, 8))), "not divisible by num_heads=3"),
        (lambda: L.DiffAttention(num_heads=3)(np.zeros((1, 2, 9))), r"2 \* num_heads = 6"),
        (lambda: L.DiffParallelScalingBlock(num_heads=2, mlp_dim=8)(np.zeros((1, 2, 6))), "num_heads=2"),
        (lambda: L.AttentionPoolLatent(num_heads=2, num_latents=0), "num_latents=0"),
        (lambda: L.AttentionPoolLatent(num_heads=2, mlp_ratio=0), "mlp_ratio=0"),
        (lambda: L.AttentionPoolLatent(num_heads=3)(np.zeros((1, 2, 8))), "not divisible by num_heads=3"),
        (lambda: L.make_norm("batch", 1e-6, "norm"), "norm='batch'"),
        (lambda: L.MultiHeadSelfAttention(num_heads=3)(np.zeros((1, 2, 8))), "not divisible by num_heads=3"),
        (lambda: L.PatchEmbedding(4, 8)(np.zeros((1, 6, 8, 3))), "height 6 is not divisible by patch size 4"),
        (lambda: L.PositionEmbedding((2, 2))(np.zeros((1, 5, 8))), "expects 4 tokens, received 5"),
        (lambda: L.MultiHeadSelfAttention(2)(np.zeros((1, 3, 4)), attention_mask=np.ones((3,), bool)), "rank 2"),
        (
            lambda: L.MultiHeadSelfAttention(2)(np.zeros((1, 3, 4)), attention_mask=np.ones((1, 4), bool)),
            "must equal the number of keys",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


OLD_CONFIGS = [  # as the previous release saved them: the new arguments absent
    (L.Mlp, dict(hidden_units=16, output_units=None, dropout_rate=0.0, activation="gelu"), (2, 6, 8)),
    (
        L.MultiHeadSelfAttention,
        dict(
            num_heads=2,
            qkv_bias=True,
            qk_norm=True,
            attention_dropout_rate=0.0,
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
        ),
        (2, 6, 8),
    ),
    (
        L.TransformerEncoderBlock,
        dict(
            num_heads=2,
            mlp_dim=16,
            qkv_bias=False,
            qk_norm=False,
            dropout_rate=0.0,
            attention_dropout_rate=0.0,
            drop_path_rate=0.1,
            layer_scale_init=1e-5,
            layer_norm_epsilon=1e-6,
        ),
        (2, 6, 8),
    ),
]


@pytest.mark.parametrize("cls,old,shape", OLD_CONFIGS, ids=[c[0].__name__ for c in OLD_CONFIGS])
def test_previous_release_configs_load_as_the_same_layer(cls, old, shape, rng):
    """`from_config` of a config without the new fields builds today's default layer: same weights, same values."""
    base = dict(name="old", trainable=True, dtype="float32")
    loaded, current = cls.from_config(dict(base, **old)), cls(**old, name="new")
    x = rng.standard_normal(shape).astype("float32")
    loaded(x), current(x)
    assert [tuple(w.shape) for w in loaded.weights] == [tuple(w.shape) for w in current.weights]
    loaded.set_weights(current.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(current(x)), atol=1e-6)
    assert {k: v for k, v in loaded.get_config().items() if k != "name"} == {
        k: v for k, v in current.get_config().items() if k != "name"
    }
