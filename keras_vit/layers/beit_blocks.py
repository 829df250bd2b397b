"""BEiT's attention with a learned relative position bias, and its encoder block.

BEiT (Bao et al. 2021, https://arxiv.org/abs/2106.08254) gives every block a
table of `(2 * rows - 1) * (2 * cols - 1) + 3` biases per head, indexed by the
row and column offset between two patches, plus three entries for the class
token (class to patch, patch to class, class to class). The bias enters the
one attention core (`keras_vit.layers._fast.attention`) as its `bias`.
Names follow timm's `beit.py` so its checkpoints map by name.
"""

from __future__ import annotations

import math
from functools import partial

import keras
import numpy as np
from keras import ops

from keras_vit.layers._fast import attention, dense, flatten_tokens, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.normalization import LayerNorm
from keras_vit.layers.regularization import DropPath
from keras_vit.validation import check_positive_int, check_rate, to_pair


def relative_position_table_size(grid_size) -> int:
    """Entries of a BEiT relative position table for a `(rows, cols)` patch grid: offsets plus 3 class entries."""
    rows, cols = to_pair(grid_size, "grid_size")
    return (2 * rows - 1) * (2 * cols - 1) + 3


def relative_position_index(grid_size) -> np.ndarray:
    """`(1 + rows * cols)^2` int32 indices into the table, class token first (timm's `gen_relative_position_index`).

    Patch pairs index their row/column offset; the class token's row reads the
    table's third-to-last entry, its column the second-to-last, and
    class-to-class the last.
    """
    rows, cols = to_pair(grid_size, "grid_size")
    size = relative_position_table_size((rows, cols))
    coords = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")).reshape(2, -1)
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, patches, patches)
    patch_index = (offsets[0] + rows - 1) * (2 * cols - 1) + (offsets[1] + cols - 1)
    index = np.zeros((rows * cols + 1,) * 2, dtype=np.int32)
    index[1:, 1:] = patch_index
    index[0, :] = size - 3
    index[:, 0] = size - 2
    index[0, 0] = size - 1
    return index


def _axis_weights(source: int, target: int) -> np.ndarray:
    """`(target, source)` linear-interpolation weights from BEiT's geometric source offsets to integer offsets."""
    low, high = 1.01, 1.5
    while high - low > 1e-6:  # the ratio whose geometric series spans the target's half-width
        ratio = (low + high) / 2.0
        if (1.0 - ratio ** (source // 2)) / (1.0 - ratio) > target // 2:
            high = ratio
        else:
            low = ratio
    steps = np.cumsum([1.0] + [ratio ** (i + 1) for i in range(source // 2 - 1)]) if source > 1 else np.zeros(0)
    positions = np.concatenate([-steps[::-1], [0.0], steps]).astype(np.float32)
    wanted = np.arange(-(target // 2), target // 2 + 1, dtype=np.float32)
    weights = np.zeros((target, source), np.float64)
    for row, x in enumerate(wanted):
        right = int(np.clip(np.searchsorted(positions, x, side="left"), 0, source - 1))
        left = max(right - 1, 0)
        to_left, to_right = max(x - positions[left], 0.0), max(positions[right] - x, 0.0)
        if to_left == 0 and to_right == 0:
            to_left = to_right = 1.0
        weights[row, left] += to_right / (to_left + to_right)
        weights[row, right] += to_left / (to_left + to_right)
    return weights


def resize_relative_position_table(table: np.ndarray, old_grid, new_grid) -> np.ndarray:
    """A BEiT table `(entries, heads)` resized from one patch grid to another, class entries kept.

    As timm's `resize_rel_pos_bias_table` (and BEiT's fine-tuning code): the old
    offsets are spread on a geometric progression over the new range, then
    interpolated linearly per head at the new integer offsets.
    """
    old_grid, new_grid = to_pair(old_grid, "old_grid"), to_pair(new_grid, "new_grid")
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] != relative_position_table_size(old_grid):
        raise ValueError(
            f"A relative position table for a {old_grid[0]}x{old_grid[1]} grid has shape "
            f"({relative_position_table_size(old_grid)}, heads). Received: table.shape={table.shape}"
        )
    if old_grid == new_grid:
        return table
    (src_h, src_w), (dst_h, dst_w) = ((2 * g[0] - 1, 2 * g[1] - 1) for g in (old_grid, new_grid))
    offsets = table[:-3].astype(np.float32).reshape(src_h, src_w, -1)
    rows, cols = _axis_weights(src_h, dst_h), _axis_weights(src_w, dst_w)
    resized = np.einsum("ys,xt,sth->yxh", rows, cols, offsets).reshape(dst_h * dst_w, -1)
    return np.concatenate([resized, table[-3:]], axis=0).astype(table.dtype)


def _gather_bias(table, index: np.ndarray):
    """`(1, heads, tokens, tokens)` float32 bias read from a `(entries, heads)` table."""
    tokens = index.shape[0]
    bias = ops.take(ops.cast(table, "float32"), ops.convert_to_tensor(index.reshape(-1)), axis=0)
    return ops.transpose(ops.reshape(bias, (tokens, tokens, -1)), (2, 0, 1))[None]


@serializable
class BeitRelativePositionBias(keras.layers.Layer):
    """One relative position bias shared by every block (BEiT's pretraining setting; timm `rel_pos_bias`).

    Args:
        grid_size: int or (int, int). Patch grid (rows, columns).
        num_heads: int. Attention heads.

    Call arguments:
        tokens: `(batch, 1 + rows * cols, dim)`; only used to place the layer in the graph.

    Returns:
        A float32 bias `(1, num_heads, tokens, tokens)`.
    """

    def __init__(self, grid_size, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = to_pair(grid_size, "grid_size")
        self.num_heads = check_positive_int(num_heads, "num_heads")

    def build(self, input_shape=None):
        self.relative_position_bias_table = self.add_weight(
            shape=(relative_position_table_size(self.grid_size), self.num_heads),
            initializer="zeros",
            name="relative_position_bias_table",
        )

    def call(self, tokens):
        return _gather_bias(self.relative_position_bias_table, relative_position_index(self.grid_size))

    def compute_output_spec(self, tokens):
        size = self.grid_size[0] * self.grid_size[1] + 1
        return keras.KerasTensor((1, self.num_heads, size, size), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=list(self.grid_size), num_heads=self.num_heads)
        return config


@serializable
class BeitAttention(keras.layers.Layer):
    """Self-attention with query and value biases but no key bias, and an optional relative position bias.

    timm's `beit.Attention`: one bias-free `qkv` projection plus `q_bias` and
    `v_bias` vectors (a key bias would cancel in the softmax), and per head a
    learned `relative_position_bias_table` when `grid_size` is given.

    Args:
        num_heads: int. Attention heads; must divide the width.
        qkv_bias: bool. Learn `q_bias` and `v_bias`. Defaults to `True`.
        grid_size: int, (int, int) or None. Patch grid of the relative position
            bias; None leaves it out. Defaults to None.
        attention_dropout_rate: float. Dropout on the attention weights. Defaults to `0`.
        dropout_rate: float. Dropout after the output projection. Defaults to `0`.

    Call arguments:
        tokens: `(batch, 1 + rows * cols, dim)`, class token first.
        attention_bias: optional float bias broadcastable to `(batch, heads, tokens, tokens)`
            (the shared relative position bias), added to the block's own.
        return_attention_scores: bool. Also return the float32 weights.
        training: bool. Enables dropout.

    Returns:
        `(batch, tokens, dim)`, and the weights `(batch, heads, tokens, tokens)` if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        qkv_bias: bool = True,
        grid_size=None,
        attention_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = bool(qkv_bias)
        self.grid_size = None if grid_size is None else to_pair(grid_size, "grid_size")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"The token width {dim} is not divisible by num_heads={self.num_heads}. "
                "Choose a width that is a multiple of the number of heads."
            )
        self.head_dim = dim // self.num_heads
        self.qkv = keras.layers.Dense(3 * dim, use_bias=False, name="qkv", dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        if self.qkv_bias:
            self.q_bias = self.add_weight(shape=(dim,), initializer="zeros", name="q_bias")
            self.v_bias = self.add_weight(shape=(dim,), initializer="zeros", name="v_bias")
        if self.grid_size is not None:
            self.relative_position_bias_table = self.add_weight(
                shape=(relative_position_table_size(self.grid_size), self.num_heads),
                initializer="zeros",
                name="relative_position_bias_table",
            )
        self.proj = keras.layers.Dense(dim, name="proj", dtype=self.dtype_policy)
        self.proj.build(tuple(input_shape[:-1]) + (dim,))
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=self.dtype_policy)
        self.proj_dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def relative_position_bias(self):
        """The block's own `(1, heads, tokens, tokens)` float32 bias, or None without a table."""
        if self.grid_size is None:
            return None
        return _gather_bias(self.relative_position_bias_table, relative_position_index(self.grid_size))

    def call(self, tokens, attention_bias=None, return_attention_scores=False, training=None):
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        qkv = dense(self.qkv, flatten_tokens(tokens), training)
        if self.qkv_bias:
            q_bias, v_bias = ops.cast(self.q_bias, qkv.dtype), ops.cast(self.v_bias, qkv.dtype)
            qkv = qkv + ops.concatenate([q_bias, ops.zeros(self.q_bias.shape, qkv.dtype), v_bias])  # no key bias
        qkv = ops.reshape(qkv, (batch, length, 3, self.num_heads, self.head_dim))
        query, key, value = (ops.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))
        bias = self.relative_position_bias()
        if attention_bias is not None:
            bias = attention_bias if bias is None else bias + ops.cast(attention_bias, "float32")
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        mixed = attention(
            query,
            key,
            value,
            scale=1.0 / math.sqrt(self.head_dim),
            bias=bias,
            dropout=dropout,
            return_weights=return_attention_scores,
        )
        mixed, weights = mixed if return_attention_scores else (mixed, None)
        flat = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (-1, self.num_heads * self.head_dim))
        outputs = self.proj_dropout(unflatten_tokens(dense(self.proj, flat, training), tokens), training=training)
        return (outputs, weights) if return_attention_scores else outputs

    def compute_output_spec(self, tokens, attention_bias=None, return_attention_scores=False, training=None):
        outputs = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        length = tokens.shape[1]
        return outputs, keras.KerasTensor((tokens.shape[0], self.num_heads, length, length), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            qkv_bias=self.qkv_bias,
            grid_size=None if self.grid_size is None else list(self.grid_size),
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_rate=self.dropout_rate,
        )
        return config


@serializable
class BeitBlock(keras.layers.Layer):
    """`x + DropPath(gamma_1 * Attn(LN(x)))`, then `x + DropPath(gamma_2 * MLP(LN(x)))` (timm's `beit.Block`).

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Inner width of the MLP.
        qkv_bias: bool. Query and value biases. Defaults to `True`.
        grid_size: int, (int, int) or None. Patch grid of the block's relative
            position bias; None leaves it out. Defaults to None.
        dropout_rate: float. Dropout after the attention and MLP projections. Defaults to `0`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        drop_path_rate: float. Stochastic depth of both branches. Defaults to `0`.
        layer_scale_init: float or None. Initial value of the `gamma_1`/`gamma_2`
            branch scales; None leaves them out. Defaults to None.
        layer_norm_epsilon: float. Defaults to `1e-6` (timm).

    Call arguments:
        tokens: `(batch, 1 + rows * cols, dim)`.
        attention_mask: must be None; BEiT attends over every token.
        return_attention_scores: bool. Also return `(batch, heads, tokens, tokens)` weights.
        training: bool.
        attention_bias: optional shared relative position bias `(1, heads, tokens, tokens)`.

    Returns:
        `(batch, tokens, dim)`, and the attention weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        grid_size=None,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
        self.qkv_bias = qkv_bias
        self.grid_size = None if grid_size is None else to_pair(grid_size, "grid_size")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        if layer_scale_init is not None and not (isinstance(layer_scale_init, (int, float)) and layer_scale_init > 0):
            raise ValueError(
                f"`layer_scale_init` must be a positive float or None. Received: layer_scale_init={layer_scale_init!r}"
            )
        self.layer_scale_init = layer_scale_init
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attn = BeitAttention(
            num_heads,
            qkv_bias=qkv_bias,
            grid_size=self.grid_size,
            attention_dropout_rate=attention_dropout_rate,
            dropout_rate=dropout_rate,
            name="attn",
            dtype=self.dtype_policy,
        )
        self.mlp = Mlp(mlp_dim, dropout_rate=dropout_rate, name="mlp", dtype=self.dtype_policy)

    def build(self, input_shape):
        def norm(name):
            layer = LayerNorm(epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy)
            layer.build(input_shape)
            return layer

        self.norm1, self.norm2 = norm("norm1"), norm("norm2")
        self.attn.build(input_shape)
        self.mlp.build(input_shape)
        self.gamma_1 = self.gamma_2 = None
        if self.layer_scale_init is not None:
            scale = keras.initializers.Constant(self.layer_scale_init)
            self.gamma_1 = self.add_weight(shape=(input_shape[-1],), initializer=scale, name="gamma_1")
            self.gamma_2 = self.add_weight(shape=(input_shape[-1],), initializer=scale, name="gamma_2")
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def _scaled(self, branch, gamma):
        return branch if gamma is None else branch * ops.cast(gamma, branch.dtype)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None, attention_bias=None):
        if attention_mask is not None:
            raise ValueError("BEiT blocks attend over every token; `attention_mask` must be None.")
        branch = self.attn(
            self.norm1(tokens),
            attention_bias=attention_bias,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        branch, weights = branch if return_attention_scores else (branch, None)
        tokens = tokens + self.drop_path(self._scaled(branch, self.gamma_1), training=training)
        branch = self.mlp(self.norm2(tokens), training=training)
        tokens = tokens + self.drop_path(self._scaled(branch, self.gamma_2), training=training)
        return (tokens, weights) if return_attention_scores else tokens

    def compute_output_spec(self, tokens, return_attention_scores=False, **kwargs):
        return self.attn.compute_output_spec(tokens, return_attention_scores=return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            qkv_bias=self.qkv_bias,
            grid_size=None if self.grid_size is None else list(self.grid_size),
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            layer_scale_init=self.layer_scale_init,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
