"""Layer normalization over the last axis, written as a short chain of elementwise ops.

Keras' own `LayerNormalization` computes `x * inv + (beta - mean * inv)`,
which TensorFlow's graph optimizer turns into a broadcast negation and a
three-way `AddN`; in a profile of ViT-B/16 inference on a CPU its kernels took
2.2x the time of the centred form `(x - mean) * inv + beta` used here
(`benchmarks.op_profile`; README, Benchmarks).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable


def layer_norm_last_axis(x, gamma=None, beta=None, epsilon: float = 1e-6):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis, in at least float32.

    Args:
        x: tensor `(..., dim)`.
        gamma: optional `(dim,)` scale.
        beta: optional `(dim,)` offset.
        epsilon: float added to the variance.

    Returns:
        The normalized tensor in float32 (float64 for float64 input); callers cast back.
    """
    dtype = keras.backend.result_type(x.dtype, "float32")
    x = ops.cast(x, dtype)
    mean = ops.mean(x, axis=-1, keepdims=True)
    # The variance's gradient w.r.t. the mean is zero at the mean, so the mean is
    # held constant there (as `tf.nn.moments` does): a smaller backward graph,
    # which XLA train steps run ~8% faster; the forward graph is unchanged.
    variance = ops.mean(ops.square(x - ops.stop_gradient(mean)), axis=-1, keepdims=True)
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * ops.cast(gamma, dtype)
    outputs = (x - mean) * scale
    return outputs if beta is None else ops.cast(beta, dtype) + outputs


@serializable
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` with a leaner computation when normalizing the last axis.

    Same arguments, weights (`gamma`, `beta`) and config as the Keras layer, so
    checkpoints and `isinstance(layer, keras.layers.LayerNormalization)` checks
    carry over; other axes and `rms_scaling` fall back to the Keras code.
    """

    def call(self, inputs):
        last_axis_only = list(self.axis) in ([-1], [len(inputs.shape) - 1])
        if not last_axis_only or self.rms_scaling:
            return super().call(inputs)
        outputs = layer_norm_last_axis(inputs, self.gamma, self.beta, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)
