"""The transformer feed-forward network with exact (erf) GELU."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._fast import dense, flatten_tokens, gelu, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_positive_int, check_rate

gelu_erf = gelu  # exact GELU, public under its historical name


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
        self.fc1 = keras.layers.Dense(self.hidden_units, name="fc1", dtype=self.dtype_policy)
        self.fc1.build(input_shape)
        self.fc2 = keras.layers.Dense(out, name="fc2", dtype=self.dtype_policy)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_units,))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def call(self, tokens, training=None):
        x = dense(self.fc1, flatten_tokens(tokens), training)
        x = gelu(x) if self.activation == "gelu" else ops.relu(x)
        x = dense(self.fc2, self.dropout(x, training=training), training)
        return unflatten_tokens(self.dropout(x, training=training), tokens)

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
