"""Normalization over the last axis: LayerNorm (`(x - mean) / sqrt(var + eps) * gamma + beta`) and RMSNorm."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._fast import layer_norm
from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_choice

layer_norm_last_axis = layer_norm  # the functional form, public under its historical name

NORM_KINDS = ("layer", "rms")


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


@serializable
class RMSNorm(keras.layers.Layer):
    """Root-mean-square normalization, `x / sqrt(mean(x^2) + epsilon) * scale` over the last axis.

    No centring and no offset (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467):
    the norm of EVA-02-style and AIMv2 models, as timm's `RmsNorm`. Statistics
    are computed in float32 under mixed precision, so a bfloat16 sum of squares
    cannot overflow or lose the small channels.

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.

    Call arguments:
        inputs: `(..., dim)`.

    Returns:
        A tensor of the input's shape, in the layer's compute dtype.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or epsilon < 0:
            raise ValueError(f"`epsilon` must be a float >= 0. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        math_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, math_dtype)
        inverse = ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(x * inverse * ops.cast(self.scale, math_dtype), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


def make_norm(kind: str, epsilon: float, name: str, dtype=None) -> keras.layers.Layer:
    """The normalization layer a model's `norm` argument names: "layer" (`LayerNorm`) or "rms" (`RMSNorm`)."""
    check_choice(kind, "norm", NORM_KINDS)
    if kind == "rms":
        return RMSNorm(epsilon=epsilon, name=name, dtype=dtype)
    return LayerNorm(epsilon=epsilon, name=name, dtype=dtype)
