"""Multi-head attention with separate query and key/value inputs and a key/value cache.

Used by the sequence Transformer for encoder self-attention, causal decoder
self-attention and encoder-decoder (cross) attention. The cache makes
incremental decoding cost one step per new token: keys and values of earlier
positions are kept in a fixed-size buffer (static shapes, so a decoding loop
compiles inside `tf.function` / `while_loop`) and only the new token is projected.
"""

from __future__ import annotations

import math
from functools import partial

import keras
from keras import ops

from keras_vit.layers._fast import attention, dense, flatten_tokens, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import expand_attention_mask
from keras_vit.layers.relative_position import apply_rotary_embedding
from keras_vit.validation import check_positive_int, check_rate


def causal_mask(num_queries, num_keys, query_start=0):
    """Boolean `(num_queries, num_keys)` mask, True where key position <= query position.

    Args:
        num_queries: int or scalar tensor. Number of query positions.
        num_keys: int or scalar tensor. Number of key positions (starting at 0).
        query_start: int or scalar tensor. Position of the first query (the
            cache index during incremental decoding). Defaults to `0`.

    Returns:
        A boolean tensor `(num_queries, num_keys)`.
    """
    queries = ops.arange(num_queries)[:, None] + ops.cast(query_start, "int32")
    keys = ops.arange(num_keys)[None, :]
    return ops.greater_equal(queries, keys)


@serializable
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over `num_heads` heads (Vaswani et al. 2017, section 3.2).

    https://arxiv.org/abs/1706.03762. Queries come from `query`, keys and values
    from `value` (self-attention when `value` is omitted). The projections are
    separate `query`, `key`, `value` and `output` Dense layers (the layout of
    `torch.nn.MultiheadAttention`'s `in_proj_weight` split in three), logits and
    softmax run in float32 under mixed precision.

    Args:
        num_heads: int. Number of heads; must divide the model width.
        use_bias: bool. Bias in the four projections. Defaults to `True`.
        attention_dropout_rate: float. Dropout on the attention weights. Defaults to `0`.
        rotary_max_wavelength: float or None. Rotate queries and keys by their
            positions (RoPE, self-attention only); None disables it. Defaults to None.

    Call arguments:
        query: `(batch, queries, dim)`.
        value: `(batch, keys, dim)` or None (self-attention).
        attention_mask: optional boolean mask, True where attention is allowed:
            `(batch, keys)` (padding), `(batch, queries, keys)` or
            `(batch, heads, queries, keys)`.
        attention_bias: optional float bias added to the logits, broadcastable to
            `(batch, heads, queries, keys)` (e.g. a relative position bias).
        use_causal_mask: bool. Forbid attending to later positions. With a
            cache, query `i` sits at position `cache_index + i`.
        cache: optional `(batch, 2, max_length, heads, head_dim)` keys and values.
            With `cache_index`, the new keys/values are written at
            `cache_index` and attention runs over the whole buffer (positions
            not yet written are hidden by the causal mask). Without
            `cache_index` the cache is used as precomputed (cross-attention;
            see `compute_cache`).
        cache_index: int or scalar int tensor. Where to write into `cache`.
        return_attention_scores: bool. Also return the float32 weights.
        training: bool. Enables dropout.

    Returns:
        `(batch, queries, dim)`; then the weights `(batch, heads, queries, keys)`
        if asked for; then the updated cache if one was passed.
    """

    def __init__(
        self,
        num_heads: int,
        use_bias: bool = True,
        attention_dropout_rate: float = 0.0,
        rotary_max_wavelength: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.use_bias = use_bias
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        if rotary_max_wavelength is not None and not (
            isinstance(rotary_max_wavelength, (int, float)) and rotary_max_wavelength > 0
        ):
            raise ValueError(
                f"`rotary_max_wavelength` must be a positive float or None. "
                f"Received: rotary_max_wavelength={rotary_max_wavelength!r}"
            )
        self.rotary_max_wavelength = None if rotary_max_wavelength is None else float(rotary_max_wavelength)

    def build(self, query_shape, value_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        dim = query_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"The model width {dim} is not divisible by num_heads={self.num_heads}. "
                "Choose a width that is a multiple of the number of heads."
            )
        self.head_dim = dim // self.num_heads
        if self.rotary_max_wavelength is not None and self.head_dim % 2:
            raise ValueError(
                f"Rotary embeddings need an even head dimension; {dim} / num_heads={self.num_heads} = "
                f"{self.head_dim}. Change the width or the number of heads."
            )

        def dense(name, shape):
            layer = keras.layers.Dense(dim, use_bias=self.use_bias, name=name, dtype=self.dtype_policy)
            layer.build(shape)
            return layer

        self.query_dense = dense("query", query_shape)
        self.key_dense = dense("key", value_shape)
        self.value_dense = dense("value", value_shape)
        self.output_dense = dense("output", tuple(query_shape[:-1]) + (dim,))
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=self.dtype_policy)

    def _project_heads(self, layer, x, training=None):
        """`layer(x)` split into heads, `(batch, length, heads, head_dim)`."""
        shape = ops.shape(x)
        projected = dense(layer, flatten_tokens(x), training)
        return ops.reshape(projected, (shape[0], shape[1], self.num_heads, self.head_dim))

    def compute_cache(self, value):
        """Projects `value` once into a `(batch, 2, keys, heads, head_dim)` key/value cache.

        Cross-attention keys and values depend only on the encoder output, so
        decoding computes them once and reuses them at every step.
        """
        key = self._project_heads(self.key_dense, value)
        return ops.stack([key, self._project_heads(self.value_dense, value)], axis=1)

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        attention_bias=None,
        use_causal_mask=False,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        offset = 0 if cache_index is None else cache_index
        if cache is not None and cache_index is None:
            key, val = cache[:, 0], cache[:, 1]
        else:
            source = query if value is None else value
            key = self._project_heads(self.key_dense, source, training)
            val = self._project_heads(self.value_dense, source, training)
            if self.rotary_max_wavelength is not None:
                positions = ops.arange(ops.shape(key)[1]) + offset
                key = apply_rotary_embedding(key, positions, self.rotary_max_wavelength)
            if cache is not None:
                start = (0, cache_index, 0, 0)
                key = ops.slice_update(cache[:, 0], start, ops.cast(key, cache.dtype))
                val = ops.slice_update(cache[:, 1], start, ops.cast(val, cache.dtype))
                cache = ops.stack([key, val], axis=1)
        query_heads = self._project_heads(self.query_dense, query, training)
        if self.rotary_max_wavelength is not None:
            positions = ops.arange(ops.shape(query_heads)[1]) + offset
            query_heads = apply_rotary_embedding(query_heads, positions, self.rotary_max_wavelength)
        num_queries, num_keys = ops.shape(query_heads)[1], ops.shape(key)[1]
        mask = None
        if attention_mask is not None:
            static_keys = key.shape[1] if cache is None or cache_index is None else None
            mask = expand_attention_mask(attention_mask, static_keys)
        if use_causal_mask:
            allowed = causal_mask(num_queries, num_keys, offset)[None, None]
            mask = allowed if mask is None else ops.logical_and(mask, allowed)
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        heads_first = partial(ops.swapaxes, axis1=1, axis2=2)  # (batch, heads, length, head_dim)
        mixed = attention(
            heads_first(query_heads),
            heads_first(key),
            heads_first(val),
            scale=1.0 / math.sqrt(self.head_dim),
            mask=mask,
            bias=attention_bias,
            dropout=dropout,
            return_weights=return_attention_scores,
        )
        mixed, weights = mixed if return_attention_scores else (mixed, None)
        flat = ops.reshape(heads_first(mixed), (-1, self.num_heads * self.head_dim))
        outputs = unflatten_tokens(dense(self.output_dense, flat, training), query)
        results = (outputs,)
        if return_attention_scores:
            results += (weights,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def compute_output_spec(self, query, value=None, return_attention_scores=False, cache=None, **kwargs):
        outputs = keras.KerasTensor(query.shape, dtype=self.compute_dtype)
        results = (outputs,)
        if return_attention_scores:
            keys = (query if value is None else value).shape[1]
            if cache is not None:
                keys = cache.shape[2]
            results += (keras.KerasTensor((query.shape[0], self.num_heads, query.shape[1], keys), dtype="float32"),)
        if cache is not None:
            results += (keras.KerasTensor(cache.shape, dtype=cache.dtype),)
        return results[0] if len(results) == 1 else results

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            use_bias=self.use_bias,
            attention_dropout_rate=self.attention_dropout_rate,
            rotary_max_wavelength=self.rotary_max_wavelength,
        )
        return config
