"""Token embeddings (optionally tied to the output projection) and learned 1D positions."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_positive_int


def _initializer_config(initializer):
    """Initializer as stored in `get_config`: names and None as they are, objects serialized."""
    if initializer is None or isinstance(initializer, (str, dict)):
        return initializer
    return keras.initializers.serialize(initializer)


@serializable
class TokenEmbedding(keras.layers.Layer):
    """Token ids to vectors, and (called with `reverse=True`) vectors to vocabulary logits.

    Tying the output projection to the embedding table shares one matrix
    between input embedding and pre-softmax projection (Vaswani et al. 2017,
    section 3.4; Press & Wolf 2017, https://arxiv.org/abs/1608.05859). The
    embeddings are multiplied by `sqrt(dim)` when `scale=True`, as in the paper.

    Args:
        vocab_size: int. Number of token ids.
        dim: int. Embedding width.
        scale: bool. Multiply looked-up embeddings by `sqrt(dim)`. Defaults to `True`.
        initializer: initializer of the table. Defaults to normal with stddev
            `dim ** -0.5` (fairseq), so scaled embeddings have unit variance.

    Call arguments:
        inputs: int ids `(batch, length)`, or with `reverse=True` vectors `(batch, length, dim)`.
        reverse: bool. Project vectors onto the table (tied output logits). Defaults to `False`.

    Returns:
        `(batch, length, dim)` embeddings, or float32 logits `(batch, length, vocab_size)`.
    """

    def __init__(self, vocab_size: int, dim: int, scale: bool = True, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.dim = check_positive_int(dim, "dim")
        self.scale = scale
        self.initializer = initializer

    def build(self, input_shape=None):
        initializer = (
            keras.initializers.RandomNormal(stddev=self.dim**-0.5)
            if self.initializer is None
            else keras.initializers.get(self.initializer)
        )
        self.embeddings = self.add_weight(shape=(self.vocab_size, self.dim), initializer=initializer, name="embeddings")

    def call(self, inputs, reverse=False):
        if reverse:
            return ops.matmul(ops.cast(inputs, "float32"), ops.transpose(ops.cast(self.embeddings, "float32")))
        vectors = ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)
        vectors = ops.cast(vectors, self.compute_dtype)
        return vectors * ops.cast(math.sqrt(self.dim), vectors.dtype) if self.scale else vectors

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocab_size,), dtype="float32")
        return keras.KerasTensor(tuple(inputs.shape) + (self.dim,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            dim=self.dim,
            scale=self.scale,
            initializer=_initializer_config(self.initializer),
        )
        return config


@serializable
class LearnedPositionEncoding(keras.layers.Layer):
    """Adds a learned embedding per position, for sequences of at most `max_length` tokens.

    Parametric positions (Gehring et al. 2017, https://arxiv.org/abs/1705.03122,
    compared in Vaswani et al. 2017, table 3 row E) cannot represent positions
    beyond the table, so longer inputs raise a `ValueError` when the length is
    known while tracing (always in eager mode and in `generate`).

    Args:
        max_length: int. Number of positions in the table.
        initializer: initializer of the table. Defaults to truncated normal, stddev 0.02.

    Call arguments:
        tokens: `(batch, length, dim)`.
        start_index: int or scalar int tensor. Position of the first token
            (incremental decoding). Defaults to `0`.

    Returns:
        `tokens` plus the embeddings of positions `start_index .. start_index + length - 1`.
    """

    def __init__(self, max_length: int, initializer="truncated_normal", **kwargs):
        super().__init__(**kwargs)
        self.max_length = check_positive_int(max_length, "max_length")
        self.initializer = initializer

    def build(self, input_shape):
        self.check_length(input_shape[1])
        initializer = self.initializer
        if initializer == "truncated_normal":
            initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.embeddings = self.add_weight(
            shape=(self.max_length, input_shape[-1]),
            initializer=keras.initializers.get(initializer),
            name="embeddings",
        )

    def check_length(self, length, start_index=0) -> None:
        """Raises a clear `ValueError` when positions past the table are asked for (static values only)."""
        if isinstance(length, int) and isinstance(start_index, int) and start_index + length > self.max_length:
            raise ValueError(
                f"A sequence of {start_index + length} positions is longer than the learned position table "
                f"(max_length={self.max_length}). Learned positions cannot extrapolate: truncate the input, "
                "build the model with a larger max_length, or use position_encoding='sinusoidal' or 'relative'."
            )

    def call(self, tokens, start_index=0):
        self.check_length(tokens.shape[1], start_index if isinstance(start_index, int) else 0)
        length = ops.shape(tokens)[1]
        positions = ops.arange(length) + ops.cast(start_index, "int32")
        table = ops.take(self.embeddings, positions, axis=0)
        return tokens + ops.cast(table, tokens.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_length=self.max_length, initializer=_initializer_config(self.initializer))
        return config
