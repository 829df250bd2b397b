"""The modern ViT family's shared layers against timm 1.0.31's modules, weights copied (atol 1e-5)."""

import functools

import keras
import numpy as np
import pytest
import timm.layers as tl
import timm.models.vision_transformer as tv
import torch
from torch import nn

from keras_vit import layers as L
from tests.layers.timm_copy import copy_from_torch, perturb, torch_forward

DIM = 16
TIMM_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": tl.GELUTanh,
    "quick_gelu": tl.QuickGELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}
TIMM_NORMS = {"layer": tl.LayerNorm, "rms": tl.RmsNorm}


def tokens(rng, batch=2, length=7, dim=DIM):
    return (2 * rng.standard_normal((batch, length, dim))).astype("float32")


def assert_matches_timm(layer, module, x, atol=1e-5, **call_kwargs):
    layer.build(x.shape)
    copy_from_torch(layer, perturb(module))
    expected = torch_forward(module, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, **call_kwargs)), expected, atol=atol)


@pytest.mark.parametrize("epsilon", [1e-6, 1e-5])
def test_rms_norm_matches_timm(epsilon, rng):
    assert_matches_timm(L.RMSNorm(epsilon=epsilon), tl.RmsNorm(DIM, eps=epsilon), tokens(rng))


def test_rms_norm_keeps_float32_statistics_under_mixed_precision(rng):
    x = (300 * rng.standard_normal((2, 5, 64))).astype("float32")  # squares beyond bfloat16's 8 mantissa bits
    layer = L.RMSNorm(dtype="mixed_bfloat16")
    y = keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32"))
    assert keras.backend.standardize_dtype(layer(x).dtype) == "bfloat16"
    expected = x / np.sqrt(np.mean(x.astype("float64") ** 2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kind,cls", [("layer", L.LayerNorm), ("rms", L.RMSNorm)])
def test_make_norm_builds_the_named_kind(kind, cls):
    layer = L.make_norm(kind, 1e-5, "norm1", "float32")
    assert type(layer) is cls and layer.name == "norm1" and layer.epsilon == 1e-5


@pytest.mark.parametrize("activation", sorted(TIMM_ACTIVATIONS))
@pytest.mark.parametrize("inner_norm", [None, "layer", "rms"])
def test_mlp_matches_timm(activation, inner_norm, rng):
    norm_layer = None if inner_norm is None else TIMM_NORMS[inner_norm]
    module = tl.Mlp(DIM, 24, out_features=12, act_layer=TIMM_ACTIVATIONS[activation], norm_layer=norm_layer)
    layer = L.Mlp(24, output_units=12, activation=activation, inner_norm=inner_norm)
    assert_matches_timm(layer, module, tokens(rng))


def test_mlp_without_bias_matches_timm(rng):
    module = tl.Mlp(DIM, 24, act_layer=tl.QuickGELU, bias=False)
    layer = L.Mlp(24, activation="quick_gelu", use_bias=False)
    assert_matches_timm(layer, module, tokens(rng))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["kernel", "kernel"]


@pytest.mark.parametrize("inner_norm", [None, "layer", "rms"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_swiglu_matches_timm(inner_norm, use_bias, rng):
    norm_layer = None if inner_norm is None else TIMM_NORMS[inner_norm]
    module = tl.SwiGLU(DIM, 20, norm_layer=norm_layer, bias=use_bias)
    layer = L.GatedMlp(20, inner_norm=inner_norm, use_bias=use_bias)
    assert_matches_timm(layer, module, tokens(rng))


@pytest.mark.parametrize("inner_norm", [None, "rms"])
def test_packed_swiglu_matches_timm_gate_first(inner_norm, rng):
    norm_layer = None if inner_norm is None else TIMM_NORMS[inner_norm]
    module = tl.SwiGLUPacked(DIM, 2 * 12, norm_layer=norm_layer)  # timm's width is fc1's: twice the product's
    layer = L.GatedMlp(12, packed=True, inner_norm=inner_norm)
    assert_matches_timm(layer, module, tokens(rng))


def test_packed_glu_with_gelu_gate_matches_timm_glu_mlp(rng):
    module = tl.GluMlp(DIM, 2 * 12, out_features=8, act_layer=nn.GELU, gate_last=False)
    assert_matches_timm(L.GatedMlp(12, output_units=8, packed=True, activation="gelu"), module, tokens(rng))


@pytest.mark.parametrize(
    "kwargs,timm_kwargs",
    [
        (dict(), dict(norm_layer=tl.LayerNorm)),
        (
            dict(activation="gelu_tanh", mlp_ratio=3.0),
            dict(act_layer=tl.GELUTanh, mlp_ratio=3.0, norm_layer=tl.LayerNorm),
        ),
        (dict(norm="rms", qkv_bias=False), dict(norm_layer=tl.RmsNorm, qkv_bias=False)),
        (dict(num_latents=3), dict(latent_len=3, norm_layer=tl.LayerNorm)),
        (dict(num_latents=3, pool="avg"), dict(latent_len=3, pool_type="avg", norm_layer=tl.LayerNorm)),
    ],
    ids=["siglip", "gelu_tanh", "rms_no_bias", "3_latents_token", "3_latents_avg"],
)
def test_attention_pool_latent_matches_timm(kwargs, timm_kwargs, rng):
    module = tl.AttentionPoolLatent(DIM, num_heads=4, **timm_kwargs)
    assert_matches_timm(L.AttentionPoolLatent(4, **kwargs), module, tokens(rng))


def test_attention_pool_latent_weights_are_the_latent_softmax(rng):
    x = tokens(rng)
    layer = L.AttentionPoolLatent(4, num_latents=2)
    layer.build(x.shape)
    copy_from_torch(layer, perturb(tl.AttentionPoolLatent(DIM, num_heads=4, latent_len=2, norm_layer=tl.LayerNorm)))
    pooled, weights = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), keras.ops.convert_to_numpy(layer(x)), atol=1e-6)
    q = keras.ops.convert_to_numpy(layer.q(layer.latent))[0].reshape(2, 4, 4).transpose(1, 0, 2)
    k = keras.ops.convert_to_numpy(layer.kv(x))[..., :DIM].reshape(2, 7, 4, 4).transpose(0, 2, 1, 3)
    logits = np.einsum("hld,bhtd->bhlt", q, k) / 2.0
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert weights.shape == (2, 4, 2, 7) and keras.backend.standardize_dtype(weights.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), expected, atol=1e-5)


def test_attention_pool_latent_mask_ignores_masked_tokens(rng):
    x = tokens(rng, batch=1)
    layer = L.AttentionPoolLatent(2)
    mask = np.array([[True, True, False, True, False, True, True]])
    masked = keras.ops.convert_to_numpy(layer(x, attention_mask=mask))
    np.testing.assert_allclose(masked, keras.ops.convert_to_numpy(layer(x[:, mask[0]])), atol=1e-5)


# ---- attention and blocks -------------------------------------------------------------------------
HEADS = 4


def norm_pair(kind, epsilon=1e-6):
    """Our `norm` kind and timm's `norm_layer` for it."""
    return kind, functools.partial(TIMM_NORMS[kind], eps=epsilon)


def key_mask(batch=2, length=7):
    mask = np.ones((batch, length), bool)
    mask[0, [1, 4]] = mask[1, 6] = False
    return mask


def assert_masked_matches_timm(layer, module, x):
    """Our `(batch, keys)` boolean mask against timm's `attn_mask` broadcast to `(batch, 1, 1, keys)`."""
    mask = key_mask(*x.shape[:2])
    expected = torch_forward(module, x, attn_mask=torch.from_numpy(mask[:, None, None, :]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, attention_mask=mask)), expected, atol=1e-5)


ATTENTION_CASES = {
    "plain": (dict(), dict(qkv_bias=True)),
    "no_biases": (dict(qkv_bias=False, proj_bias=False), dict(proj_bias=False)),
    "qk_layer_norm": (dict(qk_norm=True, norm="layer"), dict(qkv_bias=True, qk_norm=True)),
    "qk_rms_norm_inner_norm": (
        dict(qk_norm=True, inner_norm=True, norm="rms", layer_norm_epsilon=1e-5),
        dict(qkv_bias=True, qk_norm=True, scale_norm=True, norm_layer=functools.partial(tl.RmsNorm, eps=1e-5)),
    ),
    "inner_layer_norm": (dict(inner_norm=True), dict(qkv_bias=True, scale_norm=True)),
}


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_self_attention_options_match_timm_attention(case, rng):
    ours, theirs = ATTENTION_CASES[case]
    theirs = dict(dict(norm_layer=tl.LayerNorm), **theirs)
    module = tl.Attention(DIM, num_heads=HEADS, **theirs)
    layer = L.MultiHeadSelfAttention(HEADS, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)


@pytest.mark.parametrize("depth", [0, 3])
@pytest.mark.parametrize("options", ["plain", "qk_norm_inner_norm", "dual_lambda"])
def test_diff_attention_matches_timm(depth, options, rng):
    ours, theirs = {
        "plain": (dict(), dict()),
        "qk_norm_inner_norm": (dict(qk_norm=True, inner_norm=True), dict(qk_norm=True, scale_norm=True)),
        "dual_lambda": (dict(dual_lambda=True, qkv_bias=False), dict(dual_lambda=True, qkv_bias=False)),
    }[options]
    theirs = dict(dict(qkv_bias=True), **theirs)
    module = tl.DiffAttention(DIM, num_heads=HEADS // 2, depth=depth, **theirs)
    layer = L.DiffAttention(HEADS // 2, depth=depth, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)
    assert layer.lambda_init == pytest.approx(module.lambda_init)


def test_diff_attention_weights_are_the_difference_of_two_softmax_maps(rng):
    x = tokens(rng)
    layer = L.DiffAttention(2, depth=2)
    layer.build(x.shape)
    copy_from_torch(layer, perturb(tl.DiffAttention(DIM, num_heads=2, depth=2, qkv_bias=True)))
    outputs, weights = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), keras.ops.convert_to_numpy(layer(x)), atol=1e-6)
    q, k = (keras.ops.convert_to_numpy(t) for t in keras.ops.split(layer.qkv(x), 3, axis=-1)[:2])
    q, k = (t.reshape(2, 7, 2, 2, 4).transpose(3, 0, 2, 1, 4) for t in (q, k))  # (half, batch, heads, length, 4)

    def softmax(logits):
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    maps = [softmax(q[i] @ k[i].transpose(0, 1, 3, 2) / 2.0) for i in (0, 1)]
    lam = float(keras.ops.convert_to_numpy(layer.differential_lambda()))
    assert weights.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), maps[0] - lam * maps[1], atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights).sum(-1), 1 - lam, atol=1e-5)


# Each case: our block keyword arguments, timm's Block keyword arguments (mlp_ratio 2 -> mlp_dim 32).
BLOCK_CASES = {
    "vit": (dict(), dict(qkv_bias=True)),
    "deit3_layer_scale": (dict(layer_scale_init=0.1), dict(qkv_bias=True, init_values=0.1)),
    "clip_quick_gelu": (
        dict(activation="quick_gelu", layer_norm_epsilon=1e-5),
        dict(qkv_bias=True, act_layer=tl.QuickGELU, norm_layer=functools.partial(tl.LayerNorm, eps=1e-5)),
    ),
    "siglip_gelu_tanh": (dict(activation="gelu_tanh"), dict(qkv_bias=True, act_layer=tl.GELUTanh)),
    "aimv2_swiglu_rms_no_bias": (
        dict(
            mlp_kind="swiglu",
            activation="silu",
            norm="rms",
            layer_norm_epsilon=1e-5,
            qkv_bias=False,
            proj_bias=False,
            mlp_bias=False,
        ),
        dict(
            mlp_layer=tl.SwiGLU, act_layer=nn.SiLU, norm_layer=functools.partial(tl.RmsNorm, eps=1e-5), proj_bias=False
        ),
    ),
    "dinov2_giant_packed_swiglu": (
        dict(mlp_kind="swiglu_packed", activation="silu", layer_scale_init=0.1),
        dict(qkv_bias=True, mlp_layer=tl.SwiGLUPacked, act_layer=nn.SiLU, init_values=0.1),
    ),
    "beit3_inner_norms": (
        dict(attn_inner_norm=True, mlp_inner_norm=True, layer_norm_epsilon=1e-5),
        dict(
            qkv_bias=True,
            scale_attn_norm=True,
            scale_mlp_norm=True,
            norm_layer=functools.partial(tl.LayerNorm, eps=1e-5),
        ),
    ),
    "xp_qk_rms_norm": (dict(qk_norm=True, norm="rms", qkv_bias=False), dict(qk_norm=True, norm_layer=tl.RmsNorm)),
    "diff_attention_depth_5": (
        dict(attn_layer="diff", depth=5, layer_scale_init=0.1),
        dict(qkv_bias=True, attn_layer="diff", depth=5, init_values=0.1),
    ),
}


def timm_block_case(case):
    ours, theirs = BLOCK_CASES[case]
    return ours, dict(dict(mlp_ratio=2.0, norm_layer=tl.LayerNorm), **theirs)


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_encoder_block_options_match_timm_block(case, rng):
    ours, theirs = timm_block_case(case)
    module = tv.Block(DIM, HEADS, **theirs)
    layer = L.TransformerEncoderBlock(HEADS, 2 * DIM, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)


@pytest.mark.parametrize("case", ["vit", "deit3_layer_scale", "aimv2_swiglu_rms_no_bias", "diff_attention_depth_5"])
def test_res_post_block_matches_timm(case, rng):
    ours, theirs = timm_block_case(case)
    module = tv.ResPostBlock(DIM, HEADS, **theirs)
    layer = L.ResPostBlock(HEADS, 2 * DIM, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)


def test_res_post_block_layer_scale_init_sets_the_branch_norm_scales():
    for norm, attribute in (("layer", "gamma"), ("rms", "scale")):
        layer = L.ResPostBlock(2, 16, layer_scale_init=1e-5, norm=norm)
        layer.build((None, 3, 8))
        for branch_norm in (layer.norm1, layer.norm2):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(getattr(branch_norm, attribute)), np.full(8, 1e-5, "float32")
            )


@pytest.mark.parametrize("num_parallel", [2, 3])
@pytest.mark.parametrize("case", ["vit", "deit3_layer_scale", "dinov2_giant_packed_swiglu"])
def test_parallel_things_block_matches_timm(num_parallel, case, rng):
    ours, theirs = timm_block_case(case)
    module = tv.ParallelThingsBlock(DIM, HEADS, num_parallel=num_parallel, **theirs)
    layer = L.ParallelThingsBlock(HEADS, 2 * DIM, num_parallel=num_parallel, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)
    outputs, weights = layer(x, return_attention_scores=True)
    assert weights.shape == (2, num_parallel * HEADS, 7, 7)
    first = layer.attns[0].attn(layer.attns[0].norm(x), return_attention_scores=True)[1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(weights[:, :HEADS]), keras.ops.convert_to_numpy(first), atol=1e-6
    )


PARALLEL_SCALING_CASES = {
    "xp_qk_rms_no_qkv_bias": (
        dict(qk_norm=True, norm="rms", qkv_bias=False),
        dict(qk_norm=True, norm_layer=tl.RmsNorm, qkv_bias=False),
    ),
    "pwee_layer_scale": (dict(layer_scale_init=0.1), dict(qkv_bias=True, init_values=0.1)),
    "fused_out_proj_no_proj_bias": (
        dict(fuse_out_proj=True, proj_bias=False, activation="gelu_tanh"),
        dict(qkv_bias=True, fuse_out_proj=True, proj_bias=False, act_layer=tl.GELUTanh),
    ),
}


@pytest.mark.parametrize("case", sorted(PARALLEL_SCALING_CASES))
def test_parallel_scaling_block_matches_timm(case, rng):
    ours, theirs = PARALLEL_SCALING_CASES[case]
    module = tv.ParallelScalingBlock(DIM, HEADS, mlp_ratio=2.5, **dict(dict(norm_layer=tl.LayerNorm), **theirs))
    layer = L.ParallelScalingBlock(HEADS, 40, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (dict(depth=4, layer_scale_init=0.1), dict(depth=4, qkv_bias=True, init_values=0.1)),
        (dict(qkv_bias=False, qk_norm=True, norm="rms"), dict(qk_norm=True, norm_layer=tl.RmsNorm)),
        (dict(dual_lambda=True, depth=1), dict(dual_lambda=True, depth=1, qkv_bias=True)),
    ],
    ids=["dpwee", "qk_rms_no_qkv_bias", "dual_lambda"],
)
def test_diff_parallel_scaling_block_matches_timm(ours, theirs, rng):
    module = tv.DiffParallelScalingBlock(
        DIM, HEADS // 2, mlp_ratio=2.5, **dict(dict(norm_layer=tl.LayerNorm), **theirs)
    )
    layer = L.DiffParallelScalingBlock(HEADS // 2, 40, **ours)
    x = tokens(rng)
    assert_matches_timm(layer, module, x)
    assert_masked_matches_timm(layer, module, x)
