"""The transformer feed-forward network with exact (erf) GELU."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.layers._tf_graph import tensorflow_train_graph
from keras_vit.layers.bias import Dense
from keras_vit.layers.flat_tokens import flatten_tokens, unflatten_tokens
from keras_vit.layers.xla_elementwise import gelu_erf_with_xla
from keras_vit.validation import check_positive_int, check_rate


def gelu_erf(x):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (Hendrycks & Gimpel 2016).

    Written with `erf` rather than `tf.nn.gelu`, which lowers to `Erfc`, an op
    ONNX cannot take. This form is also the one TensorFlow's CPU graph rewriter
    fuses, after a rank-2 `Dense`, into one oneDNN matmul + bias + GELU kernel,
    and the one the LiteRT converter turns into its GELU op.
    """
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu(x):
    """`gelu_erf`; in TensorFlow train graphs one XLA kernel each way (train steps 1.07x faster).

    Inference keeps the plain ops, which the graph rewriter fuses into the
    preceding matmul (README, Benchmarks).
    """
    if tensorflow_train_graph():
        return gelu_erf_with_xla(x)
    return gelu_erf(x)


@serializable
class Mlp(keras.layers.Layer):
    """Two dense layers with GELU between them: `fc2(drop(gelu(fc1(x))))`.

    Args:
        hidden_units: int. Width of the inner layer (the "MLP dim").
        output_units: int or None. Output width; `None` keeps the input width.
        dropout_rate: float. Dropout after each dense layer. Defaults to `0`.
        activation: "gelu" (exact, erf) or "relu" (original Transformer). Defaults to "gelu".

    Call arguments:
        tokens: `(..., dim)`.

    Returns:
        `(..., output_units or dim)`.
    """

    def __init__(
        self,
        hidden_units: int,
        output_units: int | None = None,
        dropout_rate: float = 0.0,
        activation: str = "gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(hidden_units, "hidden_units")
        if activation not in ("gelu", "relu"):
            raise ValueError(f"`activation` must be 'gelu' or 'relu'. Received: activation={activation!r}")
        self.hidden_units = hidden_units
        self.output_units = output_units
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.activation = activation

    def build(self, input_shape):
        out = self.output_units or input_shape[-1]
        self.fc1 = Dense(self.hidden_units, name="fc1", dtype=self.dtype_policy)
        self.fc1.build(input_shape)
        self.fc2 = Dense(out, name="fc2", dtype=self.dtype_policy)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_units,))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def call(self, tokens, training=None):
        x = self.fc1(flatten_tokens(tokens))
        x = _gelu(x) if self.activation == "gelu" else ops.relu(x)
        x = self.dropout(x, training=training)
        return unflatten_tokens(self.dropout(self.fc2(x), training=training), tokens)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=self.hidden_units,
            output_units=self.output_units,
            dropout_rate=self.dropout_rate,
            activation=self.activation,
        )
        return config
