"""Differential attention: the difference of two softmax maps, which cancels attention noise.

Ye et al. 2024, "Differential Transformer" (https://arxiv.org/abs/2410.05258),
as timm's `DiffAttention`: each head splits its queries and keys into two
halves, forms two softmax maps, and mixes the values with
`softmax(q1 k1^T) - lambda * softmax(q2 k2^T)`, where
`lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init`
and `lambda_init = 0.8 - 0.6 exp(-0.3 depth)` depends on the block's index.
Each map goes through the one attention core (`keras_vit.layers._fast.attention`).
"""

from __future__ import annotations

import math
from functools import partial

import keras
from keras import ops

from keras_vit.layers._fast import attention
from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import expand_attention_mask
from keras_vit.layers.normalization import NORM_KINDS, RMSNorm, make_norm
from keras_vit.validation import check_choice, check_int, check_positive_int, check_rate

SUB_NORM_EPSILON = 1e-5  # timm's and the paper's per-head RMSNorm


def lambda_init_for_depth(depth: int) -> float:
    """The paper's depth schedule of lambda's constant part, `0.8 - 0.6 exp(-0.3 depth)`."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DifferentialHeads(keras.layers.Layer):
    """What `DiffAttention` and `DiffParallelScalingBlock` share: lambda's weights and the two-map mixing.

    Subclasses set `num_heads`, `qk_norm`, `norm_kind`, `layer_norm_epsilon`,
    `depth`, `dual_lambda` and `attention_dropout_rate`, call
    `_build_differential(dim)` in `build`, and `_differential(...)` in `call`.
    """

    def _build_differential(self, dim: int):
        if dim % (2 * self.num_heads):
            raise ValueError(
                f"Differential attention splits each head in two: the token dimension {dim} must be divisible by "
                f"2 * num_heads = {2 * self.num_heads}. Received: num_heads={self.num_heads}"
            )
        self.head_dim = dim // self.num_heads // 2  # of each half; the values keep 2 * head_dim per head
        self.q_norm = self.k_norm = None
        if self.qk_norm:
            self.q_norm, self.k_norm = (
                self._make_norm(name, (None, None, None, self.head_dim)) for name in ("q_norm", "k_norm")
            )
        self.sub_norm = RMSNorm(epsilon=SUB_NORM_EPSILON, name="sub_norm", dtype=self.dtype_policy)
        self.sub_norm.build((None, None, None, 2 * self.head_dim))
        names = ("lambda_a", "lambda_b") if self.dual_lambda else ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")
        shape = () if self.dual_lambda else (self.head_dim,)
        initializer = "zeros" if self.dual_lambda else keras.initializers.RandomNormal(stddev=0.1)
        for name in names:  # float32 whatever the policy (no autocast), as timm computes lambda
            weight = self.add_weight(shape=shape, initializer=initializer, dtype="float32", autocast=False, name=name)
            setattr(self, name, weight)
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=self.dtype_policy)

    def _make_norm(self, name: str, shape: tuple):
        layer = make_norm(self.norm_kind, self.layer_norm_epsilon, name, self.dtype_policy)
        layer.build(shape)
        return layer

    @property
    def lambda_init(self) -> float:
        return lambda_init_for_depth(self.depth)

    def differential_lambda(self):
        """`lambda_1 - lambda_2 + lambda_init` as a float32 scalar."""
        if self.dual_lambda:
            first, second = ops.exp(self.lambda_a), ops.exp(self.lambda_b)
        else:
            first = ops.exp(ops.sum(self.lambda_q1 * self.lambda_k1))
            second = ops.exp(ops.sum(self.lambda_q2 * self.lambda_k2))
        return first - second + self.lambda_init

    def _differential(self, query, key, value, attention_mask, return_attention_scores, training):
        """`(batch, length, dim)` queries, keys and values to the normalized, mixed `(batch, length, dim)` heads."""
        batch, length, dim = ops.shape(query)[0], ops.shape(query)[1], query.shape[-1]

        def halves(x):  # head h's two halves are timm's heads 2h and 2h + 1
            x = ops.transpose(ops.reshape(x, (batch, length, self.num_heads, 2, self.head_dim)), (3, 0, 2, 1, 4))
            return ops.unstack(x, 2, axis=0)

        (q1, q2), (k1, k2) = halves(query), halves(key)
        if self.q_norm is not None:
            q1, q2, k1, k2 = self.q_norm(q1), self.q_norm(q2), self.k_norm(k1), self.k_norm(k2)
        value = ops.transpose(ops.reshape(value, (batch, length, self.num_heads, 2 * self.head_dim)), (0, 2, 1, 3))
        mask = None if attention_mask is None else expand_attention_mask(attention_mask, query.shape[1])
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        maps = [
            attention(
                q,
                k,
                value,
                scale=self.head_dim**-0.5,
                mask=mask,
                dropout=dropout,
                return_weights=return_attention_scores,
            )
            for q, k in ((q1, k1), (q2, k2))
        ]
        lam = self.differential_lambda()
        if return_attention_scores:
            (first, first_weights), (second, second_weights) = maps
        else:
            first, second = maps
        mixed = first - ops.cast(lam, first.dtype) * second
        mixed = self.sub_norm(mixed) * (1.0 - self.lambda_init)
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, length, dim))
        if not return_attention_scores:
            return mixed
        return mixed, first_weights - ops.cast(lam, "float32") * second_weights


@serializable
class DiffAttention(DifferentialHeads):
    """Multi-head differential self-attention (timm's `DiffAttention`, used as `attn_layer="diff"`).

    Same projections as `MultiHeadSelfAttention` (`qkv`, `proj`, optional
    `q_norm`/`k_norm` and inner `norm`), plus the per-head RMSNorm `sub_norm`
    (epsilon 1e-5) and lambda's weights (`lambda_q1`, `lambda_k1`, `lambda_q2`,
    `lambda_k2`, or `lambda_a`, `lambda_b` with `dual_lambda`), named as timm's.

    Args:
        num_heads: int. Heads; each splits in two, so `2 * num_heads` must divide the token dimension.
        qkv_bias: bool. Bias in the qkv projection. Defaults to `True`.
        qk_norm: bool. Normalize each half-head's queries and keys. Defaults to `False`.
        attention_dropout_rate: float. Dropout on each attention map. Defaults to `0`.
        dropout_rate: float. Dropout after the output projection. Defaults to `0`.
        layer_norm_epsilon: float. Epsilon of the qk-norm and inner norm. Defaults to `1e-6`.
        proj_bias: bool. Bias in the output projection. Defaults to `True`.
        inner_norm: bool. Normalize the mixed heads before `proj`. Defaults to `False`.
        norm: "layer" or "rms". Kind of the qk-norm and inner norm. Defaults to "rms" (timm's default).
        depth: int. Index of the block (from 0), which sets `lambda_init`. Defaults to `0`.
        dual_lambda: bool. Two scalars `lambda_a`, `lambda_b` instead of four vectors. Defaults to `False`.

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return the differential map `(batch, heads, length, length)`
            (float32; rows sum to `1 - lambda`).
        training: bool. Enables dropout.

    Returns:
        `(batch, length, dim)`, and the weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attention_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        proj_bias: bool = True,
        inner_norm: bool = False,
        norm: str = "rms",
        depth: int = 0,
        dual_lambda: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.layer_norm_epsilon = layer_norm_epsilon
        self.proj_bias = proj_bias
        self.inner_norm = inner_norm
        self.norm_kind = check_choice(norm, "norm", NORM_KINDS)
        self.depth = check_int(depth, "depth", 0)
        self.dual_lambda = dual_lambda

    def build(self, input_shape):
        dim = input_shape[-1]
        self._build_differential(dim)
        self.qkv = keras.layers.Dense(3 * dim, use_bias=self.qkv_bias, name="qkv", dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.norm = self._make_norm("norm", input_shape) if self.inner_norm else None
        self.proj = keras.layers.Dense(dim, use_bias=self.proj_bias, name="proj", dtype=self.dtype_policy)
        self.proj.build(input_shape)
        self.proj_dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        query, key, value = ops.split(self.qkv(tokens), 3, axis=-1)
        results = self._differential(query, key, value, attention_mask, return_attention_scores, training)
        mixed = results[0] if return_attention_scores else results
        if self.norm is not None:
            mixed = self.norm(mixed)
        outputs = self.proj_dropout(self.proj(mixed), training=training)
        return (outputs, results[1]) if return_attention_scores else outputs

    def compute_output_spec(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
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
            qk_norm=self.qk_norm,
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_rate=self.dropout_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
            proj_bias=self.proj_bias,
            inner_norm=self.inner_norm,
            norm=self.norm_kind,
            depth=self.depth,
            dual_lambda=self.dual_lambda,
        )
        return config
