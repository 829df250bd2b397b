"""Layer normalization over the last axis: a short chain of elementwise ops, and its closed-form backward.

Keras' own `LayerNormalization` computes `x * inv + (beta - mean * inv)`,
which TensorFlow's graph optimizer turns into a broadcast negation and a
three-way `AddN`; in a profile of ViT-B/16 inference on a CPU its kernels took
2.2x the time of the centred form `(x - mean) * inv + beta` used here
(`benchmarks.op_profile`; README, Benchmarks). In TensorFlow train graphs
outside XLA the backward is written out too (`_normalize_with_backward`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.layers._tf_graph import backward_scope, tensorflow_train_graph
from keras_vit.layers.xla_elementwise import normalized_affine, normalized_input_gradient


def layer_norm_last_axis(x, gamma=None, beta=None, epsilon: float = 1e-6, dtype=None):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis, computed in at least float32.

    Args:
        x: tensor `(..., dim)`.
        gamma: optional `(dim,)` scale.
        beta: optional `(dim,)` offset.
        epsilon: float added to the variance.
        dtype: dtype of the result; defaults to the computation's (float32, or float64 for float64 input).

    Returns:
        The normalized tensor in `dtype`.
    """
    math_dtype = keras.backend.result_type(x.dtype, "float32")
    dtype = dtype or math_dtype
    params = [ops.cast(p, math_dtype) for p in (gamma, beta) if p is not None]
    if tensorflow_train_graph():
        normalize = _normalize_with_backward(gamma is not None, beta is not None, epsilon, math_dtype, dtype)
        return normalize(x, *params)
    x = ops.cast(x, math_dtype)
    mean = ops.mean(x, axis=-1, keepdims=True)
    # The variance's gradient w.r.t. the mean is zero at the mean, so the mean is
    # held constant there (as `tf.nn.moments` does): a smaller backward graph,
    # which XLA train steps run ~8% faster; the forward graph is unchanged.
    variance = ops.mean(ops.square(x - ops.stop_gradient(mean)), axis=-1, keepdims=True)
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * params[0]
    outputs = (x - mean) * scale
    return ops.cast(outputs if beta is None else params[-1] + outputs, dtype)


def _normalize_with_backward(has_gamma: bool, has_beta: bool, epsilon: float, math_dtype: str, dtype: str):
    """The layer norm as one custom-gradient function `(x, *params) -> y` (TensorFlow graphs).

    The backward is the closed form `dx = inv * (g - mean(g) - xhat * mean(g * xhat))`
    with `g = dy * gamma`, from the saved `xhat` and `inv`: a third fewer
    kernels than autodiff's graph, which the op-by-op executor runs one by one
    (train steps 1.5-3% faster on the CIFAR and ViT-Ti/16 models; README,
    Benchmarks). The elementwise ends of both directions, with their casts,
    are XLA kernels (`xla_elementwise`, another 1.02-1.03x); the row
    reductions stay TensorFlow ops, faster here than XLA's. XLA train steps
    fuse the autodiff graph better, so they keep that.
    """
    import tensorflow as tf

    @ops.custom_gradient
    def normalize(x, *params):
        scope = backward_scope()
        x_dtype = x.dtype
        x = ops.cast(x, math_dtype)
        centred = x - ops.mean(x, axis=-1, keepdims=True)
        inv = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
        gamma = params[0] if has_gamma else None
        beta = params[-1] if has_beta else None
        xhat, outputs = normalized_affine(centred, inv, gamma, beta, dtype)

        def grad(upstream, variables=None):
            with tf.name_scope(scope):
                upstream = ops.cast(upstream, math_dtype)
                batch_axes = tuple(range(len(upstream.shape) - 1))
                g = upstream * gamma if has_gamma else upstream
                g_mean = ops.mean(g, axis=-1, keepdims=True)
                projection = ops.mean(g * xhat, axis=-1, keepdims=True)
                grads = [normalized_input_gradient(g, xhat, inv, g_mean, projection, x_dtype)]
                if has_gamma:
                    grads.append(ops.sum(upstream * xhat, axis=batch_axes))
                if has_beta:
                    grads.append(ops.sum(upstream, axis=batch_axes))
                return tuple(grads)

        return outputs, grad

    return normalize


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
        return layer_norm_last_axis(inputs, self.gamma, self.beta, self.epsilon, self.compute_dtype)
