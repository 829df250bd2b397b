"""BEiT layers against timm's `beit.Attention` / `beit.Block` with copied weights, and their bias tables."""

import inspect

import keras
import numpy as np
import pytest
import timm.layers
import torch
from timm.models import beit as timm_beit

from keras_vit.layers import beit_blocks
from keras_vit.layers.beit_blocks import BeitAttention, BeitBlock, BeitRelativePositionBias

DIM, HEADS, GRID = 16, 4, (3, 2)


def _tokens(seed=0, grid=GRID, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, 1 + grid[0] * grid[1], DIM)).astype("float32")


def _perturb(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def _copy_attention(layer, attn):
    """timm attention weights -> the Keras layer (Linear weights transposed)."""
    weights = {
        "qkv/kernel": attn.qkv.weight.T,
        "q_bias": attn.q_bias,
        "v_bias": attn.v_bias,
        "relative_position_bias_table": attn.relative_position_bias_table,
        "proj/kernel": attn.proj.weight.T,
        "proj/bias": attn.proj.bias,
    }
    for variable in layer.weights:
        parts = variable.path.split("/")
        key = "/".join(parts[-2:]) if parts[-1] in ("kernel", "bias") else parts[-1]
        variable.assign(weights[key].detach().numpy())


@pytest.mark.parametrize("grid", [(3, 3), (2, 4), (1, 1)])
def test_relative_position_index_equals_timm(grid):
    expected = timm_beit.gen_relative_position_index(grid).numpy()
    np.testing.assert_array_equal(beit_blocks.relative_position_index(grid), expected)
    assert beit_blocks.relative_position_table_size(grid) == expected.max() + 1


@pytest.mark.parametrize("old,new", [((4, 4), (6, 6)), ((7, 7), (5, 5)), ((2, 3), (4, 5)), ((3, 3), (3, 3))])
def test_table_resize_equals_timm(old, new):
    rng = np.random.default_rng(1)
    table = rng.standard_normal((beit_blocks.relative_position_table_size(old), 3)).astype("float32")
    expected = timm.layers.resize_rel_pos_bias_table(
        torch.from_numpy(table),
        new_window_size=new,
        new_bias_shape=(beit_blocks.relative_position_table_size(new), 3),
        old_window_size=old,
    ).numpy()
    resized = beit_blocks.resize_relative_position_table(table, old, new)
    assert resized.shape == expected.shape and resized.dtype == np.float32
    np.testing.assert_allclose(resized, expected, atol=1e-5)


def test_table_resize_names_the_wrong_shape():
    with pytest.raises(ValueError, match=r"3x3 grid has shape \(28, heads\). Received: table.shape=\(27, 2\)"):
        beit_blocks.resize_relative_position_table(np.zeros((27, 2)), (3, 3), (4, 4))


@pytest.mark.parametrize("shared", [False, True])
def test_attention_equals_timm(shared):
    torch.manual_seed(0)
    attn = _perturb(timm_beit.Attention(DIM, num_heads=HEADS, qkv_bias=True, window_size=GRID))
    layer = BeitAttention(HEADS, grid_size=GRID)
    x = _tokens()
    layer(x)
    _copy_attention(layer, attn)
    length = x.shape[1]
    bias = np.random.default_rng(2).standard_normal((1, HEADS, length, length)).astype("float32") if shared else None
    with torch.no_grad():
        expected = attn(torch.from_numpy(x), shared_rel_pos_bias=None if bias is None else torch.from_numpy(bias))
    outputs, weights = layer(x, attention_bias=bias, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, attention_bias=bias)), expected.numpy(), atol=1e-5)
    assert tuple(weights.shape) == (2, HEADS, length, length)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(weights, -1)), 1.0, atol=1e-5)


def test_attention_without_biases_equals_timm():
    torch.manual_seed(1)
    attn = _perturb(timm_beit.Attention(DIM, num_heads=HEADS, qkv_bias=False, window_size=None))
    layer = BeitAttention(HEADS, qkv_bias=False)
    x = _tokens(3)
    layer(x)
    assert [v.path.split("/", 1)[1] for v in layer.weights] == ["qkv/kernel", "proj/kernel", "proj/bias"]
    layer.qkv.kernel.assign(attn.qkv.weight.T.detach().numpy())
    layer.proj.kernel.assign(attn.proj.weight.T.detach().numpy())
    layer.proj.bias.assign(attn.proj.bias.detach().numpy())
    with torch.no_grad():
        expected = attn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


@pytest.mark.parametrize("init_values", [0.1, None])
def test_block_equals_timm(init_values):
    torch.manual_seed(2)
    block = _perturb(
        timm_beit.Block(
            DIM, HEADS, qkv_bias=True, init_values=init_values, window_size=GRID, norm_layer=torch.nn.LayerNorm
        )
    )
    for norm in (block.norm1, block.norm2):
        norm.eps = 1e-6
    layer = BeitBlock(HEADS, 4 * DIM, grid_size=GRID, layer_scale_init=init_values)
    x = _tokens(4)
    layer(x)
    _copy_attention(layer.attn, block.attn)
    layer.norm1.set_weights([block.norm1.weight.detach().numpy(), block.norm1.bias.detach().numpy()])
    layer.norm2.set_weights([block.norm2.weight.detach().numpy(), block.norm2.bias.detach().numpy()])
    layer.mlp.fc1.set_weights([block.mlp.fc1.weight.T.detach().numpy(), block.mlp.fc1.bias.detach().numpy()])
    layer.mlp.fc2.set_weights([block.mlp.fc2.weight.T.detach().numpy(), block.mlp.fc2.bias.detach().numpy()])
    if init_values is not None:
        layer.gamma_1.assign(block.gamma_1.detach().numpy())
        layer.gamma_2.assign(block.gamma_2.detach().numpy())
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    tokens, weights = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tokens), expected, atol=1e-5)
    assert tuple(weights.shape) == (2, HEADS, x.shape[1], x.shape[1])


def test_shared_bias_equals_timm():
    module = timm_beit.RelativePositionBias(GRID, HEADS)
    with torch.no_grad():
        module.relative_position_bias_table.normal_()
    layer = BeitRelativePositionBias(GRID, HEADS)
    layer(_tokens())
    layer.relative_position_bias_table.assign(module.relative_position_bias_table.detach().numpy())
    with torch.no_grad():
        expected = module()[None].numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(_tokens())), expected, atol=0)


CASES = [
    (BeitAttention, dict(num_heads=HEADS, grid_size=GRID)),
    (BeitBlock, dict(num_heads=HEADS, mlp_dim=32, grid_size=GRID, layer_scale_init=0.1, drop_path_rate=0.1)),
    (BeitRelativePositionBias, dict(grid_size=GRID, num_heads=HEADS)),
]


@pytest.mark.parametrize("cls,kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_config_matches_constructor_and_keras_file_round_trips(cls, kwargs, tmp_path):
    layer = cls(**kwargs)
    config = layer.get_config()
    own = set(config) - set(keras.layers.Layer(name="x").get_config())
    assert own == set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    x = _tokens(5)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, cls(**kwargs)(inputs))
    for variable in model.weights:
        variable.assign(np.random.default_rng(6).standard_normal(variable.shape).astype("float32"))
    model.save(tmp_path / "layer.keras")
    loaded = keras.saving.load_model(tmp_path / "layer.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_argument_errors_name_the_value():
    with pytest.raises(ValueError, match=r"layer_scale_init` must be a positive float or None. Received: .*=-1"):
        BeitBlock(2, 8, layer_scale_init=-1)
    with pytest.raises(ValueError, match=r"width 10 is not divisible by num_heads=4"):
        BeitAttention(4)(np.zeros((1, 3, 10), "float32"))
    with pytest.raises(ValueError, match=r"grid_size.*Received: grid_size=0"):
        BeitAttention(2, grid_size=0)
    with pytest.raises(ValueError, match="attention_mask` must be None"):
        BeitBlock(2, 8)(np.zeros((1, 3, 8), "float32"), attention_mask=np.ones((1, 3), bool))
