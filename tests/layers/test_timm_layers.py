"""The modern ViT family's shared layers against timm 1.0.31's modules, weights copied (atol 1e-5)."""

import keras
import numpy as np
import pytest
import timm.layers as tl
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
