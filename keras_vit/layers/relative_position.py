"""Relative position information: the bucketed relative attention bias of T5, and rotary embeddings.

Source: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.1 (https://arxiv.org/abs/1910.10683),
a simplification of the relative position representations of Shaw et al. 2018
(https://arxiv.org/abs/1803.02155). Each head learns one scalar per bucket of
relative distance `key_position - query_position`; the bias is added to the
attention logits. Small distances get one bucket each, larger ones share
logarithmically wider buckets up to `max_distance`, and everything farther
shares the last bucket, so the bias is defined for any sequence length: a model
trained on short sequences runs on longer ones. Rotary embeddings (RoPE, Su et
al. 2021) encode relative position by rotating queries and keys instead.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_positive_int


def relative_position_bucket(
    relative_position, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
):
    """Maps relative positions (`key - query`) to bucket ids in `[0, num_buckets)`.

    Args:
        relative_position: int tensor of any shape, `key_position - query_position`.
        bidirectional: bool. Whether keys after the query get their own buckets
            (encoder); otherwise only the past is distinguished (causal decoder).
        num_buckets: int. Number of buckets (both directions together).
        max_distance: int. Distance from which all positions share the last bucket.

    Returns:
        An int32 tensor of bucket ids, same shape as `relative_position`.
    """
    relative_position = ops.cast(relative_position, "int32")
    offset = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        offset = ops.where(relative_position > 0, num_buckets, 0)
        distance = ops.abs(relative_position)
    else:
        distance = ops.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    # Distances >= max_exact fall into logarithmically spaced buckets.
    safe = ops.cast(ops.maximum(distance, 1), "float32")
    log_ratio = ops.log(safe / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + ops.cast(log_ratio * (num_buckets - max_exact), "int32")
    large = ops.minimum(large, num_buckets - 1)
    return offset + ops.where(distance < max_exact, distance, large)


@serializable
class RelativePositionBias(keras.layers.Layer):
    """Learned per-head attention bias from bucketed relative distances (T5).

    One instance is shared by every layer of a stack (as in T5): compute the
    bias once and pass it to each block as `attention_bias`.

    Args:
        num_heads: int. Attention heads (one bias table column each).
        bidirectional: bool. True for encoder self-attention, False for causal
            decoder self-attention. Defaults to `True`.
        num_buckets: int. Defaults to `32` (T5).
        max_distance: int. Defaults to `128` (T5).

    Call arguments:
        tokens: `(batch, queries, dim)`; only the query length is used.
        key_length: int or scalar tensor, or None for `queries` (self-attention
            without a cache).
        query_start: int or scalar tensor. Position of the first query
            (the cache index in incremental decoding). Defaults to `0`.

    Returns:
        A float32 bias `(1, num_heads, queries, keys)`.
    """

    def __init__(
        self, num_heads: int, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128, **kwargs
    ):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads), ("num_buckets", num_buckets), ("max_distance", max_distance)):
            check_positive_int(value, name)
        min_buckets = 4 if bidirectional else 2
        if num_buckets < min_buckets:
            raise ValueError(
                f"`num_buckets` must be at least {min_buckets} (bidirectional={bidirectional}). "
                f"Received: num_buckets={num_buckets}"
            )
        exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
        if max_distance <= exact:
            raise ValueError(
                f"`max_distance` must exceed the {exact} exactly represented distances. "
                f"Received: max_distance={max_distance}, num_buckets={num_buckets}"
            )
        self.num_heads = num_heads
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.num_buckets, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embeddings",
        )

    def call(self, tokens, key_length=None, query_start=0):
        query_length = ops.shape(tokens)[1]
        key_length = query_length if key_length is None else key_length
        queries = ops.arange(query_length)[:, None] + ops.cast(query_start, "int32")
        keys = ops.arange(key_length)[None, :]
        buckets = relative_position_bucket(keys - queries, self.bidirectional, self.num_buckets, self.max_distance)
        bias = ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)  # (queries, keys, heads)
        return ops.transpose(bias, (2, 0, 1))[None]

    def compute_output_spec(self, tokens, key_length=None, query_start=0):
        keys = tokens.shape[1] if key_length is None else (key_length if isinstance(key_length, int) else None)
        return keras.KerasTensor((1, self.num_heads, tokens.shape[1], keys), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return config


def apply_rotary_embedding(x, positions, max_wavelength: float = 10000.0):
    """Rotates query or key channels by their position (RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864).

    Channel pairs `(i, i + head_dim / 2)` are rotated by the angle
    `position / max_wavelength ** (2i / head_dim)` (the "rotate half" layout of
    GPT-NeoX and LLaMA), so the dot product of a rotated query and key depends
    on their positions only through `query_position - key_position`: a relative
    encoding with no weights, defined for any length.

    Args:
        x: `(batch, length, heads, head_dim)` with even `head_dim`.
        positions: int `(length,)` positions of the tokens.
        max_wavelength: float. Longest wavelength. Defaults to `10000`.

    Returns:
        The rotated tensor, same shape and dtype as `x`.
    """
    dim = x.shape[-1]
    if dim is None or dim % 2:
        raise ValueError(f"Rotary embeddings need an even head dimension. Received: head_dim={dim}")
    half = dim // 2
    inv_freq = ops.convert_to_tensor(1.0 / max_wavelength ** (np.arange(0, dim, 2, dtype=np.float64) / dim), "float32")
    angles = ops.cast(positions, "float32")[:, None] * inv_freq[None, :]
    cos = ops.concatenate([ops.cos(angles), ops.cos(angles)], axis=-1)[None, :, None, :]
    sin = ops.concatenate([ops.sin(angles), ops.sin(angles)], axis=-1)[None, :, None, :]
    values = ops.cast(x, "float32")
    rotated = ops.concatenate([-values[..., half:], values[..., :half]], axis=-1)
    return ops.cast(values * cos + rotated * sin, x.dtype)
