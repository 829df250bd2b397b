"""Elementwise chains of the train step, each compiled by XLA into one kernel inside TensorFlow's op-by-op graph.

TensorFlow's graph executor runs every elementwise op as its own pass over
memory: exact GELU and its derivative take about fifteen passes over the MLP's
hidden activations, the softmax backward five over the n x n weights. XLA
fuses such a chain into one loop, while oneDNN keeps the matmuls, which XLA
runs slower on CPUs (so whole-step XLA loses here; docs/benchmarks.md). A
function compiled with `jit_compile=True` and called from a plain graph is
exactly that split. Only elementwise chains with at most short row sums come
here: measured the same way, a whole layer norm in XLA (rows of 192 and
column sums for its parameters' gradients) was no faster than TensorFlow's
ops, and XLA's softmax was slower than oneDNN's, so the layer norm sends only
its elementwise ends here and the softmax forward stays.

Used only in train graphs for TensorFlow's executor (`keras_vit.layers._fast`):
inference and exported graphs keep plain, portable ops.
"""

from __future__ import annotations

import functools
import math

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _math_dtype(tf, dtype):
    """float32, or float64 for float64 tensors: half-precision inputs are computed in float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


@functools.cache
def _kernels():
    """The XLA-compiled functions, built on first use (TensorFlow is imported only here)."""
    import tensorflow as tf

    def xla(fn):
        return tf.function(fn, jit_compile=True, autograph=False, reduce_retracing=True)

    def gelu_forward(x):
        x32 = tf.cast(x, _math_dtype(tf, x.dtype))
        return tf.cast(x32 * (0.5 + 0.5 * tf.math.erf(x32 * _INV_SQRT2)), x.dtype)

    def gelu_backward(x, upstream):
        # d/dx [x Phi(x)] = Phi(x) + x phi(x)
        x32 = tf.cast(x, _math_dtype(tf, x.dtype))
        cdf = 0.5 + 0.5 * tf.math.erf(x32 * _INV_SQRT2)
        pdf = tf.exp(-0.5 * tf.square(x32)) * _INV_SQRT_2PI
        return tf.cast(tf.cast(upstream, x32.dtype) * (cdf + x32 * pdf), upstream.dtype)

    def softmax_backward(weights, d_mixing, d_outputs, outputs, d_weights, scale):
        d_weights_total = tf.cast(d_mixing, weights.dtype)
        rows = tf.reduce_sum(tf.cast(d_outputs, weights.dtype) * tf.cast(outputs, weights.dtype), -1, keepdims=True)
        if d_weights is not None:
            d_weights_total += d_weights
            rows += tf.reduce_sum(d_weights * weights, -1, keepdims=True)
        return tf.cast(weights * (d_weights_total - rows) * scale, d_mixing.dtype)

    def affine(centred, inv, gamma, beta, dtype):
        xhat = centred * inv
        outputs = xhat if gamma is None else xhat * gamma
        outputs = outputs if beta is None else outputs + beta
        return xhat, tf.cast(outputs, dtype)

    def input_gradient(g, xhat, inv, g_mean, projection, dtype):
        return tf.cast(inv * (g - g_mean - xhat * projection), dtype)

    return {
        "gelu_forward": xla(gelu_forward),
        "gelu_backward": xla(gelu_backward),
        "softmax_backward": xla(softmax_backward),
        "affine": xla(affine),
        "input_gradient": xla(input_gradient),
    }


def gelu_erf_with_xla(x):
    """Exact GELU (as `keras_vit.layers._fast.gelu`) whose forward and backward are one XLA kernel each.

    Computed in float32 for half-precision inputs; the backward recomputes
    the normal CDF from the saved input rather than keeping a second tensor.
    """
    import tensorflow as tf

    forward, backward = _kernels()["gelu_forward"], _kernels()["gelu_backward"]

    @tf.custom_gradient
    def gelu(inputs):
        return forward(inputs), lambda upstream: backward(inputs, upstream)

    return gelu(x)


def scaled_softmax_backward(weights, d_mixing, d_outputs, outputs, d_weights, scale: float):
    """`scale * dL` for `weights = softmax(L)` in one XLA kernel, in the dtype of `d_mixing`.

    Args:
        weights: float32 softmax output `(..., n, n)`.
        d_mixing: gradient of the weights as they mixed the values, `dO V^T`.
        d_outputs, outputs: `(..., n, head_dim)`; `rowsum(dO * O)` equals
            `rowsum(dO V^T * weights)` (FlashAttention's identity).
        d_weights: float32 gradient of the returned weights, or None when nothing uses them.
        scale: the query scale, folded in so the query and key gradients need no extra pass.
    """
    return _kernels()["softmax_backward"](weights, d_mixing, d_outputs, outputs, d_weights, scale)


def normalized_affine(centred, inv, gamma, beta, dtype):
    """`(xhat, xhat * gamma + beta)` of a layer norm, the second cast to `dtype`, in one XLA kernel.

    `centred` is `x - mean`, `inv` is `1 / sqrt(var + eps)`; `gamma`, `beta` may be None.
    """
    return _kernels()["affine"](centred, inv, gamma, beta, dtype)


def normalized_input_gradient(g, xhat, inv, g_mean, projection, dtype):
    """A layer norm's input gradient `inv * (g - g_mean - xhat * projection)` in `dtype`, in one XLA kernel."""
    return _kernels()["input_gradient"](g, xhat, inv, g_mean, projection, dtype)
