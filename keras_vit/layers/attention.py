"""Multi-head self-attention with one fused qkv projection."""

from __future__ import annotations

import math
from functools import partial

import keras
from keras import ops

from keras_vit.layers._fast import attention, dense, flatten_tokens, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.validation import check_choice, check_positive_int, check_rate


def expand_attention_mask(mask, num_keys):
    """A boolean mask (True = may attend) at rank 4, broadcastable to `(batch, heads, queries, keys)`.

    Accepted shapes: `(batch, keys)` (padding), `(batch, queries, keys)` or
    `(batch, heads, queries, keys)`.
    """
    rank = len(mask.shape)
    if rank not in (2, 3, 4):
        raise ValueError(
            "An attention mask must have rank 2 (batch, keys), 3 (batch, queries, keys) or 4 "
            f"(batch, heads, queries, keys). Received: mask.shape={tuple(mask.shape)}"
        )
    if mask.shape[-1] is not None and num_keys is not None and mask.shape[-1] != num_keys:
        raise ValueError(
            f"The attention mask's last axis ({mask.shape[-1]}) must equal the number of keys ({num_keys}). "
            f"Received: mask.shape={tuple(mask.shape)}"
        )
    if rank == 2:
        mask = mask[:, None, None, :]
    elif rank == 3:
        mask = mask[:, None]
    return ops.cast(mask, "bool")


@serializable
class MultiHeadSelfAttention(keras.layers.Layer):
    """Scaled dot-product self-attention over `num_heads` heads (Vaswani et al. 2017).

    Queries, keys and values come from one fused `Dense(3 * dim)` (`qkv`), as
    in ViT/timm checkpoints. Logits and softmax run in float32 even under mixed
    precision. Optional qk-norm (a norm on each head's queries and keys,
    Dehghani et al. 2023, https://arxiv.org/abs/2302.05442) and an inner norm
    on the heads' concatenated outputs before `proj` (timm's `scale_norm`, as
    in BEiT-3), both of the `norm` kind, as timm's `Attention`.

    Args:
        num_heads: int. Number of heads; must divide the token dimension.
        qkv_bias: bool. Bias in the qkv projection. Defaults to `True`.
        qk_norm: bool. Normalise queries and keys per head. Defaults to `False`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        dropout_rate: float. Dropout after the output projection. Defaults to `0`.
        layer_norm_epsilon: float. Epsilon of the qk-norm and inner norm. Defaults to `1e-6`.
        proj_bias: bool. Bias in the output projection. Defaults to `True`.
        inner_norm: bool. Normalize the mixed heads before `proj` (sublayer `norm`). Defaults to `False`.
        norm: "layer" or "rms". Kind of the qk-norm and inner norm. Defaults to "layer".

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask, True where attention is allowed:
            `(batch, keys)`, `(batch, queries, keys)` or `(batch, heads, queries, keys)`.
        return_attention_scores: bool. Also return the attention weights
            `(batch, heads, queries, keys)` (float32, rows sum to 1).
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
        norm: str = "layer",
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

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"The token dimension {dim} is not divisible by num_heads={self.num_heads}. "
                "Choose a hidden dim that is a multiple of the number of heads."
            )
        self.head_dim = dim // self.num_heads
        self.qkv = keras.layers.Dense(3 * dim, use_bias=self.qkv_bias, name="qkv", dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.proj = keras.layers.Dense(dim, use_bias=self.proj_bias, name="proj", dtype=self.dtype_policy)
        self.proj.build(input_shape)
        if self.qk_norm:
            head_shape = (None, None, None, self.head_dim)
            self.q_norm, self.k_norm = (self._norm(name, head_shape) for name in ("q_norm", "k_norm"))
        self.norm = self._norm("norm", (None, dim)) if self.inner_norm else None
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=self.dtype_policy)
        self.proj_dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def _norm(self, name: str, shape: tuple):
        layer = make_norm(self.norm_kind, self.layer_norm_epsilon, name, self.dtype_policy)
        layer.build(shape)
        return layer

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        qkv = dense(self.qkv, flatten_tokens(tokens), training)
        qkv = ops.reshape(qkv, (batch, length, 3, self.num_heads, self.head_dim))
        # One transpose to (3, batch, heads, length, head_dim), then unstack rather than
        # index: the gradient of three strided slices is three zero-padded full-size
        # tensors summed together, that of unstack a single stack (attention forward +
        # backward 1.5x faster without XLA).
        query, key, value = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
        if self.qk_norm:
            query, key = self.q_norm(query), self.k_norm(key)
        mask = None if attention_mask is None else expand_attention_mask(attention_mask, tokens.shape[1])
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        results = attention(
            query,
            key,
            value,
            scale=1.0 / math.sqrt(self.head_dim),
            mask=mask,
            dropout=dropout,
            return_weights=return_attention_scores,
        )
        mixed = results[0] if return_attention_scores else results
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (-1, self.num_heads * self.head_dim))
        if self.norm is not None:
            mixed = self.norm(mixed)
        outputs = unflatten_tokens(self.proj_dropout(dense(self.proj, mixed, training), training=training), tokens)
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
        )
        return config
