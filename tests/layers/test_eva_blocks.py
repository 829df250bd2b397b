"""EvaAttention / EvaBlock / EvaBlockPostNorm against timm's EvaAttention, AttentionRope, EvaBlock and EvaBlockPostNorm.

timm's modules get random weights plus noise; ours take them through the EVA
key map (block-relative keys), so the map is exercised too.
"""

import functools
import inspect

import keras
import numpy as np
import pytest
import torch
from timm.layers import AttentionRope, RmsNorm
from timm.layers import LayerNorm as TimmLayerNorm
from timm.models.eva import EvaAttention as TimmEvaAttention
from timm.models.eva import EvaBlock as TimmEvaBlock
from timm.models.eva import EvaBlockPostNorm as TimmEvaBlockPostNorm

from keras_vit.layers.eva_blocks import EvaAttention, EvaBlock, EvaBlockPostNorm
from keras_vit.layers.rope import AxialRotaryEmbedding, MixedRotaryEmbedding
from keras_vit.weights import timm_eva_keys, timm_keys

DIM, HEADS, TOKENS, PREFIX = 64, 4, 10, 1


def _perturb(module):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    return module.eval()


def _copy(layer, module, strip):
    """Loads `module`'s state dict into `layer` by the EVA key map, less the module's own key prefix `strip`."""
    state = module.state_dict()
    for variable in layer.weights:
        path = variable.path if variable.path.startswith("block_0/") else f"block_0/{variable.path}"
        key, layout = timm_eva_keys.timm_key(path)
        variable.assign(timm_keys.to_keras(state[key[len(strip) :]].numpy(), layout))


def _rope(rotate_half):
    angles = np.random.default_rng(3).uniform(0, 6, (TOKENS - PREFIX, DIM // HEADS // 2)).astype("float32")
    layout = np.concatenate([angles, angles], -1) if rotate_half else np.repeat(angles, 2, -1)
    return np.concatenate([np.sin(layout), np.cos(layout)], -1)


def _tokens():
    return np.random.default_rng(4).normal(size=(2, TOKENS, DIM)).astype("float32")


def _run(layer, module, strip, rope):
    x = _tokens()
    layer(x, rope=rope)  # builds
    _copy(layer, module, strip)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), rope=torch.from_numpy(rope)).numpy()
    return keras.ops.convert_to_numpy(layer(x, rope=rope)), expected


ATTENTION_CASES = [
    # (timm module kwargs, ours kwargs)
    (dict(qkv_fused=True, qkv_bias=True), dict(qkv_fused=True)),
    (dict(qkv_fused=False, qkv_bias=True, scale_norm=True), dict(qkv_fused=False, inner_norm=True)),
    (dict(qkv_fused=True, qkv_bias=False, rotate_half=True), dict(qkv_bias=False, rotate_half=True)),
]


@pytest.mark.parametrize("theirs,ours", ATTENTION_CASES)
def test_eva_attention_matches_timm(theirs, ours):
    torch.manual_seed(0)
    norm = functools.partial(TimmLayerNorm, eps=1e-6)
    theirs.setdefault("scale_norm", False)
    module = _perturb(TimmEvaAttention(DIM, HEADS, num_prefix_tokens=PREFIX, norm_layer=norm, **theirs))
    layer = EvaAttention(HEADS, num_prefix_tokens=PREFIX, **ours, name="attn")
    got, expected = _run(layer, module, "blocks.0.attn.", _rope(ours.get("rotate_half", False)))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "theirs,ours",
    [
        (dict(qkv_fused=True), dict(qkv_fused=True)),
        (dict(qkv_fused=False, num_kv_heads=2, qk_norm=True), dict(qkv_fused=False, num_kv_heads=2, qk_norm=True)),
    ],
)
def test_rope_attention_with_key_bias_and_grouped_heads_matches_timm(theirs, ours):
    torch.manual_seed(0)
    norm = functools.partial(RmsNorm, eps=1e-6)
    module = _perturb(AttentionRope(DIM, HEADS, num_prefix_tokens=PREFIX, norm_layer=norm, **theirs))
    layer = EvaAttention(HEADS, key_bias=True, norm="rms", num_prefix_tokens=PREFIX, **ours, name="attn")
    got, expected = _run(layer, module, "blocks.0.attn.", _rope(False))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


BLOCK_CASES = [
    (dict(mlp_ratio=4.0, init_values=1e-5), dict(mlp_hidden_units=256, layer_scale_init=1e-5)),
    (
        dict(mlp_ratio=8 / 3, swiglu_mlp=True, scale_mlp=True, qkv_fused=False),
        dict(mlp_hidden_units=170, mlp_kind="swiglu", mlp_inner_norm=True, qkv_fused=False),
    ),
    (dict(mlp_ratio=8 / 3, swiglu_mlp=True), dict(mlp_hidden_units=170, mlp_kind="swiglu_packed")),
    (
        dict(mlp_ratio=2.0, init_values=1.0, attn_only_layer_scale=True, attn_type="rope", qk_norm=True),
        dict(mlp_hidden_units=128, layer_scale_init=1.0, attn_only_layer_scale=True, key_bias=True, qk_norm=True),
    ),
]


@pytest.mark.parametrize("theirs,ours", BLOCK_CASES)
def test_eva_block_matches_timm(theirs, ours):
    torch.manual_seed(0)
    module = _perturb(TimmEvaBlock(DIM, HEADS, num_prefix_tokens=PREFIX, **theirs))
    layer = EvaBlock(HEADS, num_prefix_tokens=PREFIX, **ours, name="block_0")
    got, expected = _run(layer, module, "blocks.0.", _rope(False))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_post_norm_block_matches_timm():
    torch.manual_seed(0)
    module = _perturb(TimmEvaBlockPostNorm(DIM, HEADS, mlp_ratio=4.0, num_prefix_tokens=PREFIX))
    # timm's default norm_layer here is torch.nn.LayerNorm (epsilon 1e-5)
    layer = EvaBlockPostNorm(HEADS, 256, num_prefix_tokens=PREFIX, norm_epsilon=1e-5, name="block_0")
    got, expected = _run(layer, module, "blocks.0.", _rope(False))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_attention_weights_only_when_asked_and_configs_round_trip():
    layer = EvaBlock(HEADS, 128, mlp_kind="swiglu", qkv_fused=False, num_kv_heads=2, layer_scale_init=0.1)
    x = _tokens()
    out, weights = layer(x, rope=_rope(False), return_attention_scores=True)
    assert tuple(weights.shape) == (2, HEADS, TOKENS, TOKENS)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(weights, -1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(layer(x, rope=_rope(False))), atol=1e-6
    )
    clone = EvaBlock.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="must divide `num_heads` \\(4\\). Received: num_kv_heads=3"):
        EvaAttention(4, num_kv_heads=3, qkv_fused=False)
    with pytest.raises(ValueError, match="qkv_fused=False"):
        EvaAttention(4, num_kv_heads=2)
    with pytest.raises(ValueError, match="mlp_kind"):
        EvaBlock(4, 128, mlp_kind="geglu")


@pytest.mark.parametrize(
    "layer",
    [
        EvaAttention(HEADS, num_kv_heads=2, qkv_fused=False),
        EvaBlock(HEADS, 128, mlp_kind="swiglu_packed", layer_scale_init=0.1),
        EvaBlockPostNorm(HEADS, 128),
        AxialRotaryEmbedding(16, grid_type="centered"),
        MixedRotaryEmbedding(16, depth=2, num_heads=HEADS),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_keys_are_the_constructor_arguments(layer):
    params = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    base = set(keras.layers.Layer(name="x").get_config())
    assert set(layer.get_config()) - base == params
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
