"""Residual-branch regularisers: stochastic depth (drop path) and LayerScale."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_rate


@serializable
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a residual branch per sample (Huang et al. 2016,
    https://arxiv.org/abs/1603.09382), scaling kept samples by `1 / (1 - rate)`.

    Args:
        rate: float in [0, 1). Probability of dropping the branch. Defaults to `0`.
        seed: int or None. Seed of the layer's random generator.

    Call arguments:
        inputs: `(batch, ...)`.
        training: bool. Identity unless training.

    Returns:
        A tensor of the input's shape.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "rate")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        return inputs * ops.floor(keep + noise) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@serializable
class LayerScale(keras.layers.Layer):
    """Per-channel learned scale of a residual branch (CaiT, https://arxiv.org/abs/2103.17239).

    Args:
        init_values: float. Initial value of every scale (e.g. 1e-5).

    Call arguments:
        inputs: `(..., dim)`.

    Returns:
        `inputs * gamma`.
    """

    def __init__(self, init_values: float, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(init_values, (int, float)) or init_values <= 0:
            raise ValueError(f"`init_values` must be a positive float. Received: init_values={init_values!r}")
        self.init_values = float(init_values)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init_values), name="gamma"
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(init_values=self.init_values)
        return config
