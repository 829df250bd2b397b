"""The layers' math in one place: each function's reference form in `keras.ops`, its TensorFlow speed path beside it.

Layers call `attention`, `layer_norm`, `gelu`, `dense`, `flatten_tokens` and
`patch_projection` here. Each first writes out its reference math (plain `keras.ops`, every
backend, every mode), and hands over to a faster equivalent only where one
pays: in graphs run by TensorFlow's op-by-op executor (eager, `tf.function`),
never inside XLA clusters (`jit_compile=True`), which fuse autodiff's graph
themselves, and never on other backends. The speed paths:

- `flatten_tokens`: dense layers on rank-2 tokens, where TensorFlow's CPU
  graph rewriter fuses bias and GELU into the matmul.
- `dense`: in 16-bit training the bias is added first (`bias + x @ W`), so its
  gradient is a float32 `Sum` rather than `BiasAddGrad`, which accumulates
  bfloat16 in bfloat16.
- `patch_projection`: in train graphs the strided convolution as one matmul
  over flattened patches (its filter gradient took 3x as long).
- `attention`, `layer_norm`: hand-written backward passes in train graphs
  (`gradients`), with their elementwise ends as XLA kernels (`kernels`).
- `gelu`: one XLA kernel each way in train graphs.

One switch turns them all off: the environment variable
`KERAS_VIT_FAST_PATHS=0`, or `set_fast_paths(False)` / `with fast_paths(False):`.
It is read when a function is traced, so a `tf.function` keeps the choice it
was traced with.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator

import keras
from keras import ops

ENV_VAR = "KERAS_VIT_FAST_PATHS"
_OFF, _GRAPH, _TRAIN = "off", "graph", "train"
_override: list[bool] = []  # innermost `fast_paths(...)` / `set_fast_paths(...)` last


# ---- the switch ----------------------------------------------------------------------------------
def fast_paths_enabled() -> bool:
    """Whether the speed paths may be used: the innermost `fast_paths`/`set_fast_paths`, else the env var."""
    if _override:
        return _override[-1]
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value in ("1", "true", "on", "yes", ""):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{ENV_VAR} must be 1 (on, the default) or 0 (off). Received: {ENV_VAR}={value!r}")


def set_fast_paths(enabled: bool) -> None:
    """Turns the speed paths on or off for functions traced from now on (overrides the env var)."""
    if not isinstance(enabled, bool):
        raise ValueError(f"`enabled` must be True or False. Received: enabled={enabled!r}")
    _override[:] = [enabled]


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Context manager: the speed paths on or off for what is traced inside it."""
    if not isinstance(enabled, bool):
        raise ValueError(f"`enabled` must be True or False. Received: enabled={enabled!r}")
    _override.append(enabled)
    try:
        yield
    finally:
        _override.pop()


# ---- where we are being traced -------------------------------------------------------------------
def tensorflow_op_by_op() -> bool:
    """True when tracing for TensorFlow's op-by-op executor: TensorFlow backend, outside any XLA cluster.

    TensorFlow has no public test for XLA context; should its internal one
    move, this says False and the reference math (always correct) is used.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return not control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    except (ImportError, AttributeError):
        return False


def _mode() -> str:
    """`"train"` (op-by-op, a gradient tape records), `"graph"` (op-by-op, inference) or `"off"` (reference)."""
    if not fast_paths_enabled() or not tensorflow_op_by_op():
        return _OFF
    try:
        from tensorflow.python.eager import record

        return _TRAIN if record.could_possibly_record() else _GRAPH
    except (ImportError, AttributeError):
        return _GRAPH


# ---- the seam ------------------------------------------------------------------------------------
def attention(
    query,
    key,
    value,
    scale: float,
    mask=None,
    bias=None,
    dropout: Callable | None = None,
    return_weights: bool = False,
):
    """`softmax(query key^T * scale + bias) value` over `(batch, heads, tokens, head_dim)` inputs.

    Logits and softmax run in float32 (DESIGN: numerics); the weights mix the
    values in the values' dtype. The weights are materialized for the caller
    only when `return_weights` is set; otherwise other backends use the fused
    `keras.ops.dot_product_attention` on float32 inputs.

    Args:
        query, key, value: `(batch, heads, tokens, head_dim)` tensors of one dtype.
        scale: float multiplying the logits, usually `1 / sqrt(head_dim)`.
        mask: optional boolean tensor broadcastable to `(batch, heads, queries, keys)`, True where
            attention is allowed.
        bias: optional float tensor added to the logits (e.g. a learned relative position bias).
        dropout: optional callable applied to the weights before they mix the values.
        return_weights: bool. Also return the float32 weights `(batch, heads, queries, keys)`.

    Returns:
        The outputs `(batch, heads, queries, head_dim)` in the values' dtype, and the weights if asked for.
    """
    mode = _mode()
    mask_bias = None if mask is None else ops.where(mask, ops.zeros((), "float32"), ops.full((), -1e9, "float32"))
    if mode == _TRAIN and dropout is None and bias is None:
        from keras_vit.layers._fast.gradients import attention_with_backward

        outputs, weights = attention_with_backward(scale, mask_bias, attention_weights)(query, key, value)
        return (outputs, weights) if return_weights else outputs
    if not return_weights and dropout is None and _fused_attention_exact(query, value):
        return _fused_attention(query, key, value, scale, mask, bias)
    weights = attention_weights(query, key, scale, mask_bias, bias)
    mixing = weights if dropout is None else dropout(weights)
    outputs = ops.matmul(ops.cast(mixing, value.dtype), value)
    return (outputs, weights) if return_weights else outputs


def attention_weights(query, key, scale: float, mask_bias=None, bias=None):
    """`softmax(query key^T * scale + mask_bias + bias)` in float32 (the reference form)."""
    logits = ops.matmul(ops.cast(query, "float32") * scale, ops.swapaxes(ops.cast(key, "float32"), -1, -2))
    for term in (mask_bias, bias):
        if term is not None:
            logits = logits + ops.cast(term, "float32")
    return ops.softmax(logits, axis=-1)


def _fused_attention_exact(query, value) -> bool:
    """`keras.ops.dot_product_attention` computes logits in the inputs' dtype: exact for float32 only.

    TensorFlow's version is the same einsum chain as ours, so there ours is kept. It also
    takes values as wide as the queries only (differential attention's are twice as wide).
    """
    return (
        keras.backend.backend() != "tensorflow"
        and keras.backend.standardize_dtype(query.dtype) == "float32"
        and query.shape[-1] == value.shape[-1]
    )


def _fused_attention(query, key, value, scale: float, mask, bias):
    """`keras.ops.dot_product_attention` (flash attention where the backend has it), heads-first in and out."""
    swap = lambda x: ops.swapaxes(x, 1, 2)  # noqa: E731
    if mask is not None:
        mask = ops.broadcast_to(mask, (query.shape[0] or ops.shape(query)[0], *attention_logits_shape(query, key)))
    outputs = ops.dot_product_attention(swap(query), swap(key), swap(value), bias=bias, mask=mask, scale=scale)
    return swap(outputs)


def attention_logits_shape(query, key) -> tuple:
    """`(heads, queries, keys)` of attention between `(batch, heads, tokens, head_dim)` tensors."""
    return (ops.shape(query)[1], ops.shape(query)[2], ops.shape(key)[2])


def layer_norm(x, gamma=None, beta=None, epsilon: float = 1e-6, dtype=None):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis, computed in at least float32.

    The centred form `(x - mean) * inv + beta` (not Keras' `x * inv + (beta - mean * inv)`,
    whose graph ran 2.2x slower on a CPU). In TensorFlow train graphs the
    backward is written out (`gradients.layer_norm_with_backward`).

    Args:
        x: tensor `(..., dim)`.
        gamma: optional `(dim,)` scale.
        beta: optional `(dim,)` offset.
        epsilon: float added to the variance.
        dtype: dtype of the result; defaults to the computation's (float32, or float64 for float64 input).
    """
    math_dtype = keras.backend.result_type(x.dtype, "float32")
    dtype = dtype or math_dtype
    params = [ops.cast(p, math_dtype) for p in (gamma, beta) if p is not None]
    if _mode() == _TRAIN:
        from keras_vit.layers._fast.gradients import layer_norm_with_backward

        normalize = layer_norm_with_backward(gamma is not None, beta is not None, epsilon, math_dtype, dtype)
        return normalize(x, *params)
    x = ops.cast(x, math_dtype)
    mean = ops.mean(x, axis=-1, keepdims=True)
    # The variance's gradient w.r.t. the mean is zero at the mean, so the mean is held
    # constant there (as `tf.nn.moments` does): a smaller backward graph, same forward.
    variance = ops.mean(ops.square(x - ops.stop_gradient(mean)), axis=-1, keepdims=True)
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * params[0]
    outputs = (x - mean) * scale
    return ops.cast(outputs if beta is None else params[-1] + outputs, dtype)


def gelu(x):
    """Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (Hendrycks & Gimpel 2016).

    Written with `erf` rather than `tf.nn.gelu` (which lowers to `Erfc`, an op
    ONNX cannot take); this form is also the one TensorFlow's CPU rewriter
    fuses after a rank-2 matmul and LiteRT turns into its GELU op. In TensorFlow
    train graphs: one XLA kernel each way (train steps 1.07x faster).
    """
    if _mode() == _TRAIN:
        from keras_vit.layers._fast.kernels import gelu_erf_with_xla

        return gelu_erf_with_xla(x)
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def flatten_tokens(x):
    """`(..., dim)` tokens as `(n, dim)` on TensorFlow, elsewhere unchanged (`unflatten_tokens` undoes it).

    A Dense on rank-3 input is wrapped in reshapes by Keras' TensorFlow backend,
    which keep the CPU graph rewriter from fusing bias and GELU into the matmul;
    on rank-2 tokens the MLP is two fused kernels.
    """
    if _mode() == _OFF or len(x.shape) == 2:
        return x
    return ops.reshape(x, (-1, x.shape[-1]))


def unflatten_tokens(x, like):
    """`x` with the leading shape of `like` (a no-op where the ranks already agree)."""
    if len(x.shape) == len(like.shape):
        return x
    return ops.reshape(x, tuple(ops.shape(like)[:-1]) + (x.shape[-1],))


def dense(layer: keras.layers.Dense, x, training=None):
    """`layer(x)` for a `keras.layers.Dense`.

    TensorFlow, 16-bit training: the bias goes in first (`bias + x @ W`), so its
    gradient is a `Sum` in float32 rather than `BiasAddGrad`, which accumulates
    bfloat16 in bfloat16 (tensorflow/tensorflow#86378: over 8320 token rows its
    sums came out 30-50 off, the value biases' gradients 60%). Inference and
    float32 keep `BiasAdd`, which oneDNN fuses with the matmul and GELU.
    """
    if (
        _mode() == _OFF
        or not training
        or not layer.use_bias
        or layer.compute_dtype not in ("bfloat16", "float16")
        or getattr(layer, "quantization_mode", None)
        or getattr(layer, "lora_enabled", False)
    ):
        return layer(x)
    if not layer.built:
        layer.build(x.shape)
    with keras.name_scope(layer.name):
        x = ops.cast(x, layer.compute_dtype)
        kernel, bias = (ops.cast(w, layer.compute_dtype) for w in (layer.kernel, layer.bias))
        outputs = ops.add(bias, ops.matmul(x, kernel))  # Keras maps `x + bias` to BiasAdd
        return outputs if layer.activation is None else layer.activation(outputs)


def patch_projection(conv: keras.layers.Conv2D, images):
    """`conv(images)` for a channels-last conv whose kernel equals its stride, as `(batch, patches, filters)`.

    In TensorFlow train graphs: one matmul over flattened patches (same weights
    and result; its gradient is one matmul, where TensorFlow's CPU filter
    gradient of the strided convolution took 3x as long), bias added first.
    """
    if _mode() != _TRAIN:
        x = conv(images)
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1] * shape[2], conv.filters))
    (ph, pw), dtype, filters = conv.kernel_size, conv.compute_dtype, conv.filters
    shape = ops.shape(images)
    batch, rows, cols, channels = shape[0], shape[1] // ph, shape[2] // pw, shape[3]
    with keras.name_scope(conv.name):
        patches = ops.reshape(ops.cast(images, dtype), (batch, rows, ph, cols, pw, channels))
        patches = ops.reshape(ops.transpose(patches, (0, 1, 3, 2, 4, 5)), (batch * rows * cols, ph * pw * channels))
        tokens = ops.matmul(patches, ops.cast(ops.reshape(conv.kernel, (ph * pw * channels, filters)), dtype))
        if conv.use_bias:
            tokens = ops.add(ops.cast(conv.bias, dtype), tokens)
    return ops.reshape(tokens, (batch, rows * cols, filters))
