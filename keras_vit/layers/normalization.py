"""Layer normalization over the last axis, `(x - mean) / sqrt(var + eps) * gamma + beta`."""

from __future__ import annotations

import keras

from keras_vit.layers._fast import layer_norm
from keras_vit.layers._serializable import serializable

layer_norm_last_axis = layer_norm  # the functional form, public under its historical name


@serializable
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` computed as `layer_norm` when normalizing the last axis.

    Same arguments, weights (`gamma`, `beta`) and config as the Keras layer, so
    checkpoints and `isinstance(layer, keras.layers.LayerNormalization)` checks
    carry over; other axes and `rms_scaling` fall back to the Keras code.
    Statistics are computed in float32 under mixed precision.
    """

    def call(self, inputs):
        last_axis_only = list(self.axis) in ([-1], [len(inputs.shape) - 1])
        if not last_axis_only or self.rms_scaling:
            return super().call(inputs)
        return layer_norm(inputs, self.gamma, self.beta, self.epsilon, self.compute_dtype)
